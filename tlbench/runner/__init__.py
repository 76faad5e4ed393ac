"""The run layer: the only code that reads the composed config. It builds the objects below,
orchestrates a run, locks, resumes and records it, and feeds the loggers."""

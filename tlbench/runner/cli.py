"""How the Hydra commands (`python -m tlbench`, `tlbench-lr-find`) end on an error a user can fix:
one message on stderr (what is wrong, why, the fix), no traceback, exit code 2
(errors.USER_ERROR_EXIT). That covers tlbench's own errors (errors.UserError), a value the config
leaves to the user (`???`) and Hydra's composition errors (an unknown key or group option, a bad
override), which get tlbench's hint. Anything else is a bug and keeps its traceback, as does
every error with HYDRA_FULL_ERROR=1."""

import contextlib
import difflib
import os
import re
import sys

from hydra.errors import CompactHydraException, ConfigCompositionException, MissingConfigException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue

from tlbench.errors import USER_ERROR_EXIT, UserError
from tlbench.runner.settings import missing_value_message

FULL_ERROR = "HYDRA_FULL_ERROR"
SWEEP_FLAGS = ("-m", "--multirun")
UNKNOWN_KEY = (ConfigAttributeError, ConfigKeyError)  # the cause of Hydra's "Could not override 'key'"


def run_hydra_main(hydra_main, argv=None) -> int:
    """Runs a `@hydra.main` function on `argv` (None: the process's own) and returns its exit code;
    an error a user can fix is printed as one message (exit code 2)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        with _command_line(argv), _hydra_reraises():
            hydra_main()
    except BrokenPipeError:  # `tlbench --help | head`: the reader left; Python's documented way out
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (Exception, _Escaped) as caught:  # noqa: BLE001 - a user's error is printed, anything else re-raised
        return exit_code(caught.error if isinstance(caught, _Escaped) else caught,
                         sweep=any(flag in argv for flag in SWEEP_FLAGS))
    return 0


def exit_code(err: Exception, sweep: bool = False) -> int:
    """In a command's `except`: prints a user's error as one message and returns 2; re-raises
    anything else, and everything with HYDRA_FULL_ERROR=1 (its traceback is the error's own)."""
    message = None if os.environ.get(FULL_ERROR) == "1" else user_message(err, sweep)
    if message is None:  # its own traceback and cause (not the _Escaped it may have travelled in)
        raise err from err.__cause__
    print(f"error: {message}", file=sys.stderr)
    return USER_ERROR_EXIT


class _Escaped(BaseException):
    """A user's error on its way out of Hydra's job runner, which catches Exception only: caught
    there, it would print a line of its own ("Error executing job ...") before the message."""

    def __init__(self, error: Exception):
        super().__init__(error)
        self.error = error


@contextlib.contextmanager
def escaping_user_errors():
    """Around a single run's task (not a sweep's: its runs' errors are recorded and the sweep goes on)."""
    try:
        yield
    except (UserError, MissingMandatoryValue) as err:
        raise _Escaped(err) from None


def user_message(err: Exception, sweep: bool = False) -> str | None:
    """The message for an error a user can fix, or None for anything else."""
    if isinstance(err, UserError):
        return str(err)
    if isinstance(err, MissingMandatoryValue):
        return missing_value_message([err.full_key])
    if isinstance(err, MissingConfigException):
        return _unknown_option(err)
    if isinstance(err, ConfigCompositionException) and isinstance(err.__cause__, UNKNOWN_KEY):
        return _unknown_key(err, sweep)
    if isinstance(err, CompactHydraException):  # a malformed override and the like: Hydra says which
        return str(err)
    return None


def _unknown_key(err: ConfigCompositionException, sweep: bool) -> str:
    cause = err.__cause__
    key = cause.full_key or str(cause.key)
    given = re.search(r"use \+(\S+=.*)$", str(err), flags=re.M)  # Hydra: "To append to your config use +k=v"
    override = given.group(1) if given else f"{key}=..."
    siblings = [str(k) for k in cause.parent_node.keys()] if cause.parent_node is not None else []
    close = [".".join([*key.split(".")[:-1], name]) for name in difflib.get_close_matches(str(cause.key), siblings)]
    guess = f"; did you mean {' or '.join(close)}?" if close else ""
    lines = [f"{override}: the config has no setting {key}{guess}"]
    if sweep:
        lines.append("In a sweep (-m) Hydra composes the config once without the swept options (e.g. experiment=a,b), "
                     f"so a key that only a swept option has is missing there: write ++{override}, which sets the key, "
                     "adding it where it is missing.")
    else:
        lines.append(f"`python -m tlbench <your overrides> --cfg job` prints every setting; +{override} adds a key "
                     "the config does not have.")
    return "\n".join(lines)


def _unknown_option(err: MissingConfigException) -> str:
    first = str(err).splitlines()[0]
    options = list(err.options or [])
    if not options:
        return str(err)
    wanted = (err.missing_cfg_file or "").rsplit("/", 1)[-1]
    close = difflib.get_close_matches(wanted, options, n=3)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return f"{first}; {hint}the options are {', '.join(options)} (one YAML file each in conf/)"


@contextlib.contextmanager
def _command_line(argv: list[str]):
    """`@hydra.main` reads sys.argv: the given arguments, for the call."""
    saved = sys.argv
    sys.argv = [saved[0] if saved else "tlbench", *argv]
    try:
        yield
    finally:
        sys.argv = saved


@contextlib.contextmanager
def _hydra_reraises():
    """Hydra prints any error with a (shortened) traceback and exits 1, unless HYDRA_FULL_ERROR=1,
    when it re-raises it (hydra/_internal/utils.py run_and_report): set for the call, so the error
    reaches run_hydra_main. Only this process reads it (launched jobs return their errors)."""
    saved = os.environ.get(FULL_ERROR)
    os.environ[FULL_ERROR] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(FULL_ERROR, None)
        else:
            os.environ[FULL_ERROR] = saved

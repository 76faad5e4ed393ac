#!/usr/bin/env bash
# A real one-node SLURM on this machine, and tlbench's `hydra/launcher=slurm` preset through it:
#   1. writes a minimal slurm.conf for this host (all its CPUs and memory, one partition, no
#      accounting), starts munged, slurmctld and slurmd as root, waits until the node is idle;
#   2. submits a 2-run tiny sweep, checks both result.json files and the sweep's report;
#   3. starts a 1-run sweep of about a minute of training and preempts it twice, each time after
#      it has saved an epoch checkpoint:
#      a. `scancel --signal=USR2 <job>`, what SLURM sends before a time limit (submitit asks for it
#         with --signal=USR2@signal_delay_s): submitit's handler calls the launcher's checkpoint(),
#         runs `scontrol requeue` and exits, and tlbench records the attempt as interrupted;
#      b. `scontrol requeue <job>`, what an administrator or a requeueing preemption does: SIGTERM
#         (which submitit ignores), SIGKILL after KillWait, so the attempt dies without clean-up;
#      and checks that SLURM restarted the job twice and that the run resumed each time from its
#      last checkpoint (result.json status ok, two `resumes`), in the same sweep folder.
# The daemons are stopped however the script ends. Exits 1 when any check fails.
#
#   . .venv/bin/activate && bash benchmarks/slurm/one_node.sh [work folder]      # as root
#
# Needs root, the `cluster` extra in the active Python, and Debian's packages
#   apt-get install munge slurmctld slurmd slurm-client      (or the slurm-wlm metapackage)
# Installs nothing itself. Not part of the test suite: it needs root and takes about 8 minutes
# (SLURM holds a requeued job for about 2 minutes before it may start again).
# Environment: PYTHON (default python), PREEMPT_EPOCHS (default 12; 3-6 s each on 2 CPU cores),
# SLURM_PORT (slurmctld's port, default 6817; slurmd gets the next one).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(realpath -m "${1:-/tmp/tlbench-slurm-$(date +%Y%m%d-%H%M%S)}")
PYTHON=${PYTHON:-python}
PREEMPT_EPOCHS=${PREEMPT_EPOCHS:-12}
PORT=${SLURM_PORT:-6817}
STATE=$WORK/slurm
FAILED=0
LAUNCHER_PID=
DAEMON_PIDS=()

# The preset asks for 8 CPUs, 32 GB and a GPU per job: this node has 2 CPUs and no GPU.
LAUNCH=(hydra/launcher=slurm hydra.launcher.partition=debug hydra.launcher.cpus_per_task=1
        hydra.launcher.gpus_per_node=null hydra.launcher.mem_gb=2 hydra.launcher.timeout_min=30)
TINY=(dataset=synthetic batch_size=32 augment=none checkpoint_every_s=0 pretrained=false)  # tests/conftest.py's TINY

say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { say "ERROR: $*"; exit 1; }
check() {  # check <what> <command...>: runs the command, records a failure without stopping
    local what=$1; shift
    if "$@"; then say "ok     $what"; else say "FAILED $what"; FAILED=1; fi
}

need_tools() {
    [ "$(id -u)" = 0 ] || die "run as root (slurmd and munged run as root here)"
    local missing=() tool package
    for pair in munged:munge slurmctld:slurmctld slurmd:slurmd sinfo:slurm-client sbatch:slurm-client \
                scontrol:slurm-client scancel:slurm-client squeue:slurm-client srun:slurm-client; do
        tool=${pair%%:*}; package=${pair#*:}
        command -v "$tool" >/dev/null || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        die "missing $(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')- install with:" \
            "apt-get update && apt-get install -y munge slurmctld slurmd slurm-client"
    fi
    "$PYTHON" -c "import hydra_plugins.hydra_submitit_launcher, tlbench" 2>/dev/null \
        || die "$PYTHON lacks tlbench or its \`cluster\` extra: activate the virtualenv (. .venv/bin/activate)"
}

write_conf() {
    mkdir -p "$STATE"/{ctld,slurmd,munge} && chmod 755 "$STATE" "$STATE/munge"  # clients reach munged's socket
    local host node
    host=$(hostname -s)
    node=$(slurmd -C | head -1)  # this machine: NodeName=<host> CPUs=2 ... RealMemory=<MiB>
    cat > "$STATE/slurm.conf" <<EOF
ClusterName=tlbench
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$STATE/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
PlugStackConfig=$STATE/plugstack.conf
# no cgroups: linuxproc tracks a job's processes through /proc, and tasks are not confined
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=10
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    : > "$STATE/plugstack.conf"
    export SLURM_CONF=$STATE/slurm.conf  # for the client commands here and, through sbatch, in the jobs
}

start_daemons() {
    [ -f "$STATE/munge/munge.key" ] || { dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
                                         chmod 400 "$STATE/munge/munge.key"; }
    munged --socket="$STATE/munge/munge.socket" --key-file="$STATE/munge/munge.key" \
        --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/seed"
    slurmctld -f "$SLURM_CONF"
    slurmd -f "$SLURM_CONF"
    say "started munged, slurmctld and slurmd ($(sinfo --version)); logs in $STATE"
    local state=
    for _ in $(seq 60); do
        [ ${#DAEMON_PIDS[@]} = 2 ] || { [ -s "$STATE/slurmd.pid" ] && [ -s "$STATE/slurmctld.pid" ] \
            && DAEMON_PIDS=("$(cat "$STATE/slurmd.pid")" "$(cat "$STATE/slurmctld.pid")"); }
        state=$(sinfo -h -N -o %t 2>/dev/null || true)
        if [ "$state" = idle ] && [ ${#DAEMON_PIDS[@]} = 2 ]; then
            say "node $(hostname -s) is idle: $(sinfo -h -N -o '%N %c CPUs %m MiB partition %P')"
            return
        fi
        sleep 1
    done
    die "the node is not idle after 60 s (sinfo: '${state:-no answer}'); see $STATE/slurmctld.log and slurmd.log"
}

stop_all() {  # jobs first: their slurmstepd needs slurmctld and munged to finish
    local status=$?
    set +e
    [ -n "$LAUNCHER_PID" ] && kill "$LAUNCHER_PID" 2>/dev/null
    if [ ${#DAEMON_PIDS[@]} -gt 0 ]; then
        squeue -h -o %A 2>/dev/null | sort -u | xargs -r scancel
        for _ in $(seq 60); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 1; done
        kill "${DAEMON_PIDS[@]}" 2>/dev/null
        for _ in $(seq 20); do kill -0 "${DAEMON_PIDS[@]}" 2>/dev/null || break; sleep 0.5; done
        kill -9 "${DAEMON_PIDS[@]}" 2>/dev/null
    fi
    [ -S "$STATE/munge/munge.socket" ] && munged --stop --socket="$STATE/munge/munge.socket" >/dev/null 2>&1
    say "stopped the daemons; everything is in $WORK"
    exit "$status"
}

sweep_folder() {  # the sweep folder that is not in the list $1: tlbench names it after the command
    comm -13 <(printf '%s\n' $1 | sort) <(ls "$WORK/results/sweeps" 2>/dev/null | sort) | head -1
}

job_ids() {  # the SLURM job ids submitit used in a sweep folder
    ls "$1/.submitit" | grep '_' | tr '\n' ' '
}

result_field() {  # result_field <result.json> <python expression on r>
    "$PYTHON" -c "import json, sys; r = json.load(open(sys.argv[1])); print($2)" "$1" 2>/dev/null
}

wait_for() {  # wait_for <seconds> <what> <command...>: polls the command once a second while the sweep runs
    local limit=$1 what=$2; shift 2
    for _ in $(seq "$limit"); do
        "$@" && return 0
        [ -z "$LAUNCHER_PID" ] || kill -0 "$LAUNCHER_PID" 2>/dev/null || break
        sleep 1
    done
    die "gave up waiting for: $what"
}

two_runs() {
    say "--- 1. a 2-run sweep through hydra/launcher=slurm"
    local started=$SECONDS before sweep
    before=$(ls "$WORK/results/sweeps" 2>/dev/null || true)
    timeout 900 "$PYTHON" -m tlbench -m "${TINY[@]}" epochs=2 seed=0,1 "${LAUNCH[@]}" results_dir="$WORK/results" \
        > "$WORK/two_runs.log" 2>&1 || { tail -30 "$WORK/two_runs.log"; die "the 2-run sweep failed (log: $WORK/two_runs.log)"; }
    sweep=$WORK/results/sweeps/$(sweep_folder "$before")
    say "the sweep took $((SECONDS - started)) s; SLURM jobs $(job_ids "$sweep")"
    check "both runs ok, report written ($sweep)" "$PYTHON" "$REPO/benchmarks/slurm/check_sweep.py" "$sweep" --runs 2
    check "sbatch got the partition override" grep -qs -- "--partition=debug" "$sweep"/.submitit/*/*_submission.sh
    check "both jobs ran as SLURM array tasks (submitit's logs)" test "$(grep -ls \
        'JobEnvironment(job_id=[0-9]*_[01],' "$sweep"/.submitit/*/*_log.out | wc -l)" = 2
}

restarts() { scontrol show job "$1" 2>/dev/null | grep -o 'Restarts=[0-9]*' | cut -d= -f2; }
restarted() { [ "$(restarts "$1")" -ge "$2" ] 2>/dev/null; }
saved_after_resume() {  # the attempt after resume $2 has saved a checkpoint of a later epoch
    [ "$(result_field "$1" "len(r['resumes']) == $2 and len(r['epochs']) > r['resumes'][-1]['after_epoch']")" = True ]
}

preempt() {  # preempt <job> <how...>: runs the command, waits until SLURM has requeued the job
    local job=$1 before; shift
    before=$(restarts "$job")
    say "\$ $*"
    "$@"
    wait_for 120 "job $job to be requeued" restarted "$job" $((before + 1))
    say "requeued: $(scontrol show job "$job" | grep -o 'JobState=[A-Z]*\|Restarts=[0-9]*\|EligibleTime=[^ ]*' | tr '\n' ' ')"
}

preempted_run() {
    say "--- 2. a $PREEMPT_EPOCHS-epoch run, preempted twice, each time after an epoch checkpoint"
    local started=$SECONDS before sweep job result exit_status=0
    before=$(ls "$WORK/results/sweeps" 2>/dev/null || true)
    new_sweep_folder() { [ -n "$(sweep_folder "$before")" ]; }
    "$PYTHON" -m tlbench -m "${TINY[@]}" epochs="$PREEMPT_EPOCHS" dataset.train_size=512 seed=0 "${LAUNCH[@]}" \
        results_dir="$WORK/results" > "$WORK/preempted.log" 2>&1 &
    LAUNCHER_PID=$!
    wait_for 120 "the sweep folder" new_sweep_folder
    sweep=$WORK/results/sweeps/$(sweep_folder "$before")
    result=$sweep/0/result.json
    wait_for 300 "the run's first checkpoint" test -f "$sweep/0/checkpoint.pt"
    job=$(squeue -h -t RUNNING -o %i | head -1)
    say "job $job saved epoch $(result_field "$result" "len(r['epochs'])"); its run.lock: $(cat "$sweep/0/run.lock")"
    preempt "$job" scancel --signal=USR2 "$job"
    say "the preempted attempt recorded status $(result_field "$result" "r['status'], r['error']")"
    wait_for 400 "the requeued job to resume and save a later epoch" saved_after_resume "$result" 1
    say "job $job resumed, saved epoch $(result_field "$result" "len(r['epochs'])"); its run.lock: $(cat "$sweep/0/run.lock")"
    preempt "$job" scontrol requeue "$job"
    say "the killed attempt left status $(result_field "$result" "r['status']"), run.lock" \
        "$(test -f "$sweep/0/run.lock" && echo present || echo absent)"
    wait "$LAUNCHER_PID" || exit_status=$?
    LAUNCHER_PID=
    say "the sweep took $((SECONDS - started)) s, exit status $exit_status"
    grep -h "taking over run\|resuming run" "$sweep/0/__main__.log" | sed 's/^/    /' || true
    check "the launching process exited 0" test "$exit_status" = 0
    check "SLURM restarted job $job twice (Restarts=$(restarts "$job"))" restarted "$job" 2
    check "submitit requeued the job after USR2 (its log says so)" grep -qs "Requeued job" "$sweep"/.submitit/*/*_log.out
    check "the run resumed from its checkpoint both times" "$PYTHON" "$REPO/benchmarks/slurm/check_sweep.py" "$sweep" \
        --runs 1 --resumes 2
    check "the requeued attempts stayed in the sweep's folder (no other sweep folder)" \
        test -z "$(sweep_folder "$before $(basename "$sweep")")"
}

main() {
    need_tools
    mkdir -p "$WORK"
    trap stop_all EXIT
    trap 'exit 143' TERM INT
    export TLBENCH_OFFLINE=1 HF_HUB_OFFLINE=1 TLBENCH_DATA_DIR=$WORK/data TLBENCH_WEIGHTS_DIR=$WORK/weights
    cd "$REPO"
    write_conf
    start_daemons
    two_runs
    preempted_run
    if [ "$FAILED" = 0 ]; then say "all checks passed"; else say "some checks FAILED"; fi
    exit "$FAILED"
}

main "$@"; exit  # on one line: bash has read all of it before running, so editing the file mid-run is safe

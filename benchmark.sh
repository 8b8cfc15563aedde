#!/usr/bin/env bash
# Sweep launcher for the EauDeQN-JAX scripts: expands algorithms x env ids x network sizes x U_max x seeds into runs
# and executes them with N local workers or as one Slurm job array. Finished runs are skipped and unfinished runs
# that have a checkpoint/ are resumed with --resume. See `./benchmark.sh --help` and README "Reproducing the paper".
set -euo pipefail

# ================================================================================================================
# SMOKE BUDGETS: the tiny per-script arguments of `--preset smoke`. This is the one place to change them.
# ================================================================================================================
SMOKE_ATARI_ARGS=(--total-timesteps 2000 --learning-starts 500 --buffer-size 2000 --target-network-frequency 500
    --eval-episodes 1)
SMOKE_CLASSIC_ARGS=(--total-timesteps 2000 --learning-starts 500 --target-network-frequency 100 --eval-episodes 1)
SMOKE_OFFLINE_ARGS=(--num-epochs 2 --steps-per-epoch 100 --target-network-frequency 50 --eval-episodes 1
    --transitions-per-checkpoint 1000 --eval-max-episode-steps 2000)
SMOKE_MUJOCO_ARGS=(--total-timesteps 2000 --learning-starts 500 --eval-episodes 1)
# Arguments of tools/write_dqn_replay_dataset.py for the smoke preset's tiny offline dataset.
SMOKE_DATASET_ARGS=(--num-checkpoints 2 --transitions-per-checkpoint 1000)
SMOKE_ATARI_ENV=Pong-v5
SMOKE_CLASSIC_ENV=CartPole-v1
SMOKE_MUJOCO_ENV=Hopper-v5
# Checkpoint interval (steps: env steps online, gradient steps offline) passed to the paper presets so that long runs
# can be resumed. Runs launched by hand get the scripts' default unless --checkpoint-interval is given.
PAPER_CKPT_ATARI=1000000
PAPER_CKPT_OFFLINE=62500
PAPER_CKPT_MUJOCO=100000
# ================================================================================================================

# The paper's 10 Atari games: 10 of the 15 of Ceron et al. (2024) / Graesser et al. (2022), keeping Pong,
# SpaceInvaders and CrazyClimber (named in the paper) and the spread of DQN's human-normalised scores: low (MsPacman,
# BeamRider, Enduro), around human (Pong, SpaceInvaders, Qbert) and far above human (CrazyClimber, VideoPinball,
# Boxing, Breakout).
ATARI_10=(MsPacman-v5 Pong-v5 Qbert-v5 BeamRider-v5 Boxing-v5 Breakout-v5 CrazyClimber-v5 Enduro-v5 SpaceInvaders-v5
    VideoPinball-v5)
ATARI_15=(MsPacman-v5 Pong-v5 Qbert-v5 Assault-v5 Asterix-v5 BeamRider-v5 Boxing-v5 Breakout-v5 CrazyClimber-v5
    DemonAttack-v5 Enduro-v5 FishingDerby-v5 SpaceInvaders-v5 Tutankham-v5 VideoPinball-v5)
MUJOCO_6=(Ant-v5 HalfCheetah-v5 Hopper-v5 Humanoid-v5 Walker2d-v5 HumanoidStandup-v5)
# PolyPruneSAC final sparsities of the return-vs-sparsity front (Fig. 13 left); the paper's exact set is not in its
# text, 0.95 is the default and shares its runs with paper-mujoco.
PARETO_FINAL_SPARSITIES=(0.5 0.7 0.8 0.9 0.95 0.99)

ALL_ALGOS=(eaudedqn polyprune_dqn dqn eaudedqn_classic eaudecql polyprune_cql cql eaudesac polyprune_sac sac)

usage() {
    cat <<'EOF'
Usage: ./benchmark.sh [--preset NAME] [selection flags] [execution flags] [-- EXTRA SCRIPT ARGS]

Presets (selection flags narrow a preset: --algos keeps those of its algorithms, the others replace its values):
  paper-atari      eaudedqn, polyprune_dqn, dqn x 10 games x 5 seeds x small/medium/large (Fig. 4 top, 5, 10)
  paper-atari-15   the same on the 15 games of Ceron et al. (2024)
  paper-offline    eaudecql, polyprune_cql, cql x 10 games x 5 seeds x small/large (Fig. 6); needs --dataset-root
  paper-mujoco     eaudesac, polyprune_sac, sac x 6 MuJoCo envs x 10 seeds x small/medium/large (Fig. 7, 8)
  ablation-umax    eaudedqn (10 games x 5 seeds) and eaudesac (6 envs x 10 seeds), small/large, U_max 3,10,30
                   (Fig. 9, 14); U_max = 3 runs are the default runs of paper-atari/paper-mujoco
  pareto-mujoco    polyprune_sac small, final sparsity 0.5..0.99 x 6 envs x 10 seeds (Fig. 13 left, with
                   ablation-umax's eaudesac small runs)
  smoke            every script once with tiny budgets (seed 1, small networks, --save-model)

Selection:
  --algos A,B        from: eaudedqn polyprune_dqn dqn eaudedqn_classic eaudecql polyprune_cql cql eaudesac
                     polyprune_sac sac (dqn/cql/sac = the PolyPrune script with --final-sparsity 0)
  --env-ids E,F      environment ids
  --seeds S          comma list (1,2,3) or a count N (= 1..N)
  --sizes A,B        network sizes (small,medium,large); "none" passes no --network-size
  --umax A,B         U_max values for the eaude* algorithms (3 = default, no suffix in the exp name)
  --final-sparsity A,B  s_F values for the polyprune_* algorithms (0.95 = default)
  -- ARGS            extra arguments appended to every script command
Execution:
  --output-dir DIR   run folders go to DIR (default: runs, relative to the repository root)
  --workers N        parallel local runs (default 1); with --slurm, the job array's concurrency limit
  --gpus 0,1         GPU ids for local workers, assigned round-robin (default: all of nvidia-smi -L, or none)
  --dry-run          print one command per run that would be executed, nothing else
  --slurm            submit one sbatch job array (one task per run) instead of running locally
  --slurm-template F sbatch script (default tools/slurm_template.sbatch)
  --sbatch-args "A"  extra sbatch options, e.g. "--partition=gpu --time=48:00:00"
  --save-model       pass --save-model; the model file then also marks a run as finished
  --checkpoint-interval N  pass --checkpoint-interval N (paper presets set one)
  --finish-slack N   a run counts as finished when its metrics reach budget - N steps (default: 1% of budget)
  --dataset-root D   offline datasets: D/<Game>/1/replay_logs (DQN Replay layout)
  --python "CMD"     interpreter command (default: "uv run python"; env BENCHMARK_PYTHON)
  --script-dir D     where the algorithm scripts and tools/ live (default: this file's folder)
EOF
}

die() {
    echo "error: $*" >&2
    exit 2
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SELF="$ROOT/$(basename "${BASH_SOURCE[0]}")"

# Absolute path of $1, resolved against the invocation directory (the folder may not exist yet).
abspath() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$PWD/$1" ;;
    esac
}

# ---------------------------------------------------------------------------------------------------------------
# Finished / resumable detection. A run folder is <output-dir>/<env_id>__<exp_name>__<seed>__<unix_time>/.
# Finished: config.json exists and either <exp_name>.cleanrl_model exists (written at the end with --save-model) or
# the largest global_step in the tail of metrics.jsonl is >= budget - slack, where budget is total_timesteps (online)
# or num_epochs * steps_per_epoch (offline) read from config.json.
# ---------------------------------------------------------------------------------------------------------------
config_int() { # config_int FILE KEY -> integer value or nothing
    grep -o "\"$2\": *[0-9][0-9]*" "$1" 2>/dev/null | head -n 1 | grep -o '[0-9]*$' || true
}

run_budget() {
    local cfg="$1/config.json" total epochs steps
    total="$(config_int "$cfg" total_timesteps)"
    if [[ -n "$total" ]]; then
        echo "$total"
        return
    fi
    epochs="$(config_int "$cfg" num_epochs)"
    steps="$(config_int "$cfg" steps_per_epoch)"
    if [[ -n "$epochs" && -n "$steps" ]]; then
        echo $((epochs * steps))
    fi
}

last_step() {
    # metrics.jsonl is appended in step order, so the maximum is in its tail.
    [[ -f "$1/metrics.jsonl" ]] || return 0
    tail -n 200 "$1/metrics.jsonl" | grep -o '"global_step": *[0-9][0-9]*' | grep -o '[0-9]*$' | sort -n | tail -n 1
}

run_finished() { # run_finished DIR EXP_NAME
    local dir="$1" exp="$2" budget last slack
    [[ -f "$dir/config.json" ]] || return 1
    [[ -f "$dir/$exp.cleanrl_model" ]] && return 0
    budget="$(run_budget "$dir")"
    [[ -n "$budget" ]] || return 1
    last="$(last_step "$dir")"
    [[ -n "$last" ]] || return 1
    if [[ -n "$FINISH_SLACK" ]]; then slack="$FINISH_SLACK"; else slack=$((budget / 100)); fi
    ((last >= budget - slack))
}

# Newest folder of a run (prefix <env_id>__<exp_name>__<seed>__), empty if none.
find_run_dir() {
    local outdir="$1" prefix="$2" d best="" best_t=-1 t
    for d in "$outdir/$prefix"*/; do
        [[ -d "$d" ]] || continue
        d="${d%/}"
        t="${d##*__}"
        [[ "$t" =~ ^[0-9]+$ ]] || continue
        if ((t > best_t)); then
            best_t=$t
            best="$d"
        fi
    done
    printf '%s' "$best"
}

# A task record is one line: OUTDIR \t PREFIX \t EXP_NAME \t BASE_COMMAND (shell-quoted). State (finished / resume)
# is resolved when the task runs, so requeued Slurm tasks and restarted sweeps pick up their checkpoints.
resolve_task() { # resolve_task RECORD -> prints "skip" or the full command
    local outdir prefix exp cmd dir
    IFS=$'\t' read -r outdir prefix exp cmd <<<"$1"
    dir="$(find_run_dir "$outdir" "$prefix")"
    if [[ -n "$dir" ]] && run_finished "$dir" "$exp"; then
        echo skip
    elif [[ -n "$dir" && -d "$dir/checkpoint" ]]; then
        printf '%s --resume %q\n' "$cmd" "$(display_path "$dir")"
    else
        printf '%s\n' "$cmd"
    fi
}

run_task() { # run_task RECORD LOGFILE
    local full
    full="$(resolve_task "$1")"
    if [[ "$full" == skip ]]; then
        echo "[benchmark] finished, skipping: $(cut -f2 <<<"$1")" >&2
        return 0
    fi
    echo "[benchmark] $(date +%T) start: $full" >&2
    if eval "$full" >"$2" 2>&1; then
        echo "[benchmark] $(date +%T) done: $(cut -f2 <<<"$1")" >&2
    else
        echo "[benchmark] $(date +%T) FAILED (log: $2): $(cut -f2 <<<"$1")" >&2
        return 1
    fi
}

display_path() { # paths inside the repository are printed relative to it (commands run from the repo root)
    case "$1" in
        "$ROOT"/*) printf '%s' "${1#"$ROOT"/}" ;;
        *) printf '%s' "$1" ;;
    esac
}

# Slurm array task entry point: benchmark.sh --exec-task TASKFILE INDEX (0-based line of TASKFILE).
if [[ "${1:-}" == "--exec-task" ]]; then
    [[ $# -eq 3 ]] || die "--exec-task needs TASKFILE INDEX"
    # Header lines "# key=value" carry the launcher's settings into the task.
    FINISH_SLACK="$(sed -n 's/^# finish-slack=//p' "$2")"
    ROOT="$(sed -n 's/^# root=//p' "$2")"
    record="$(grep -v '^#' "$2" | sed -n "$(($3 + 1))p")"
    [[ -n "$record" ]] || die "no task $3 in $2"
    cd "$ROOT"
    full="$(resolve_task "$record")"
    if [[ "$full" == skip ]]; then
        echo "[benchmark] finished, skipping: $(cut -f2 <<<"$record")"
        exit 0
    fi
    echo "[benchmark] $(date +%T) task $3: $full"
    eval "exec $full"
fi

# ---------------------------------------------------------------------------------------------------------------
# Argument parsing
# ---------------------------------------------------------------------------------------------------------------
PRESET="" ALGOS="" ENV_IDS="" SEEDS="" SIZES="" UMAXES="" SFS=""
OUTPUT_DIR="" WORKERS=1 GPUS="" DRY_RUN=0 SLURM=0 SLURM_TEMPLATE="" SBATCH_ARGS="" SAVE_MODEL=0
CKPT_INTERVAL="" FINISH_SLACK="" DATASET_ROOT="" PYTHON_CMD="${BENCHMARK_PYTHON:-uv run python}" SCRIPT_DIR=""
EXTRA_ARGS=()
need() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --preset) need "$@"; PRESET="$2"; shift 2 ;;
        --algos) need "$@"; ALGOS="$2"; shift 2 ;;
        --env-ids) need "$@"; ENV_IDS="$2"; shift 2 ;;
        --seeds) need "$@"; SEEDS="$2"; shift 2 ;;
        --sizes) need "$@"; SIZES="$2"; shift 2 ;;
        --umax) need "$@"; UMAXES="$2"; shift 2 ;;
        --final-sparsity) need "$@"; SFS="$2"; shift 2 ;;
        --output-dir) need "$@"; OUTPUT_DIR="$2"; shift 2 ;;
        --workers) need "$@"; WORKERS="$2"; shift 2 ;;
        --gpus) need "$@"; GPUS="$2"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        --slurm) SLURM=1; shift ;;
        --slurm-template) need "$@"; SLURM_TEMPLATE="$(abspath "$2")"; shift 2 ;;
        --sbatch-args) need "$@"; SBATCH_ARGS="$2"; shift 2 ;;
        --save-model) SAVE_MODEL=1; shift ;;
        --checkpoint-interval) need "$@"; CKPT_INTERVAL="$2"; shift 2 ;;
        --finish-slack) need "$@"; FINISH_SLACK="$2"; shift 2 ;;
        --dataset-root) need "$@"; DATASET_ROOT="$(abspath "$2")"; shift 2 ;;
        --python) need "$@"; PYTHON_CMD="$2"; shift 2 ;;
        --script-dir) need "$@"; SCRIPT_DIR="$(abspath "$2")"; shift 2 ;;
        --) shift; EXTRA_ARGS=("$@"); break ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
[[ "$WORKERS" =~ ^[1-9][0-9]*$ ]] || die "--workers must be a positive integer, got '$WORKERS'"
[[ -z "$FINISH_SLACK" || "$FINISH_SLACK" =~ ^[0-9]+$ ]] || die "--finish-slack must be a step count"
[[ -z "$CKPT_INTERVAL" || "$CKPT_INTERVAL" =~ ^[0-9]+$ ]] || die "--checkpoint-interval must be a step count"
if [[ -n "$OUTPUT_DIR" ]]; then OUTPUT_DIR="$(abspath "$OUTPUT_DIR")"; fi
# Commands run from the folder that holds the scripts, like CleanRL's benchmark utility.
if [[ -n "$SCRIPT_DIR" ]]; then ROOT="$SCRIPT_DIR"; fi
[[ -d "$ROOT" ]] || die "--script-dir $ROOT does not exist"
cd "$ROOT"
: "${OUTPUT_DIR:=$ROOT/runs}"
: "${SLURM_TEMPLATE:=$ROOT/tools/slurm_template.sbatch}"

# ---------------------------------------------------------------------------------------------------------------
# Presets: a preset sets a default selection; ablations add extra (algo, sizes, umax) groups.
# A group is "ALGOS|ENVS|SEEDS|SIZES|UMAXES|SFS|PRESET_ARGS" with comma lists.
# ---------------------------------------------------------------------------------------------------------------
join() {
    local IFS=,
    echo "$*"
}
GROUPS_=()
ckpt_atari=(--checkpoint-interval "$PAPER_CKPT_ATARI")
ckpt_offline=(--checkpoint-interval "$PAPER_CKPT_OFFLINE")
ckpt_mujoco=(--checkpoint-interval "$PAPER_CKPT_MUJOCO")
case "$PRESET" in
    "") [[ -n "$ALGOS" && -n "$ENV_IDS" ]] || die "give --preset or both --algos and --env-ids (see --help)"
        GROUPS_+=("$ALGOS|$ENV_IDS|${SEEDS:-1}|${SIZES:-none}|${UMAXES:-3}|${SFS:-0.95}|") ;;
    paper-atari | paper-atari-15)
        if [[ "$PRESET" == paper-atari ]]; then games="$(join "${ATARI_10[@]}")"; else games="$(join "${ATARI_15[@]}")"; fi
        GROUPS_+=("eaudedqn,polyprune_dqn,dqn|$games|5|small,medium,large|3|0.95|${ckpt_atari[*]}") ;;
    paper-offline)
        GROUPS_+=("eaudecql,polyprune_cql,cql|$(join "${ATARI_10[@]}")|5|small,large|3|0.95|${ckpt_offline[*]}") ;;
    paper-mujoco)
        GROUPS_+=("eaudesac,polyprune_sac,sac|$(join "${MUJOCO_6[@]}")|10|small,medium,large|3|0.95|${ckpt_mujoco[*]}") ;;
    ablation-umax)
        GROUPS_+=("eaudedqn|$(join "${ATARI_10[@]}")|5|small,large|3,10,30|0.95|${ckpt_atari[*]}")
        GROUPS_+=("eaudesac|$(join "${MUJOCO_6[@]}")|10|small,large|3,10,30|0.95|${ckpt_mujoco[*]}") ;;
    pareto-mujoco)
        GROUPS_+=("polyprune_sac|$(join "${MUJOCO_6[@]}")|10|small|3|$(join "${PARETO_FINAL_SPARSITIES[@]}")|${ckpt_mujoco[*]}") ;;
    smoke)
        SAVE_MODEL=1 # the model file marks a smoke run as finished exactly (logging may stop short of the budget)
        GROUPS_+=("eaudedqn,polyprune_dqn,dqn|$SMOKE_ATARI_ENV|1|small|3|0.95|${SMOKE_ATARI_ARGS[*]}")
        GROUPS_+=("eaudedqn_classic|$SMOKE_CLASSIC_ENV|1|none|3|0.95|${SMOKE_CLASSIC_ARGS[*]}")
        GROUPS_+=("eaudecql,polyprune_cql,cql|$SMOKE_ATARI_ENV|1|small|3|0.95|${SMOKE_OFFLINE_ARGS[*]}")
        GROUPS_+=("eaudesac,polyprune_sac,sac|$SMOKE_MUJOCO_ENV|1|small|3|0.95|${SMOKE_MUJOCO_ARGS[*]}") ;;
    *) die "unknown --preset '$PRESET' (paper-atari, paper-atari-15, paper-offline, paper-mujoco, ablation-umax, pareto-mujoco, smoke)" ;;
esac

# Hand-given selection flags narrow a preset: --algos keeps only those algorithms of each group (a group left
# without algorithms is dropped, so `--preset smoke --algos eaudecql` runs EauDeCQL on its own env only); the other
# flags replace the group's values.
if [[ -n "$PRESET" ]]; then
    kept=()
    for i in "${!GROUPS_[@]}"; do
        IFS='|' read -r g_algos g_envs g_seeds g_sizes g_umax g_sfs g_args <<<"${GROUPS_[$i]}"
        if [[ -n "$ALGOS" ]]; then
            sel=()
            IFS=, read -r -a wanted <<<"$ALGOS"
            for a in "${wanted[@]}"; do
                [[ ",$g_algos," == *",$a,"* ]] && sel+=("$a")
            done
            ((${#sel[@]})) || continue
            g_algos="$(join "${sel[@]}")"
        fi
        kept+=("$g_algos|${ENV_IDS:-$g_envs}|${SEEDS:-$g_seeds}|${SIZES:-$g_sizes}|${UMAXES:-$g_umax}|${SFS:-$g_sfs}|$g_args")
    done
    ((${#kept[@]})) || die "--algos $ALGOS: none of them is in preset $PRESET"
    GROUPS_=("${kept[@]}")
fi

if [[ -z "$DATASET_ROOT" ]]; then
    if [[ "$PRESET" == smoke ]]; then DATASET_ROOT="$OUTPUT_DIR/_smoke_dataset"; else DATASET_ROOT="$ROOT/datasets"; fi
fi

# algo -> script and fixed arguments.
algo_script() {
    case "$1" in
        eaudedqn) echo eaudedqn_atari_jax.py ;;
        polyprune_dqn | dqn) echo polyprune_dqn_atari_jax.py ;;
        eaudedqn_classic) echo eaudedqn_jax.py ;;
        eaudecql) echo eaudecql_atari_jax.py ;;
        polyprune_cql | cql) echo polyprune_cql_atari_jax.py ;;
        eaudesac) echo eaudesac_mujoco_jax.py ;;
        polyprune_sac | sac) echo polyprune_sac_mujoco_jax.py ;;
        *) die "unknown algorithm '$1' (one of: ${ALL_ALGOS[*]})" ;;
    esac
}

# Game name of an env id for the DQN Replay layout: "Pong-v5" / "ALE/Pong-v5" / "PongNoFrameskip-v4" -> "Pong".
game_of() {
    local g="${1#ALE/}"
    g="${g%-v*}"
    echo "${g%NoFrameskip}"
}

# ---------------------------------------------------------------------------------------------------------------
# Expansion. exp_name = <algo>[_<size>][_umax<U>][_sf<S>] (U_max suffix only when != 3, s_F only when != 0.95), so the
# default runs of every preset share their folders and the analysis tool can parse names (it prefers config.json).
# ---------------------------------------------------------------------------------------------------------------
read -r -a PY <<<"$PYTHON_CMD"
RECORDS=()
NEED_DATASET=()
declare -A SEEN=()
for group in "${GROUPS_[@]}"; do
    IFS='|' read -r g_algos g_envs g_seeds g_sizes g_umax g_sfs g_args <<<"$group"
    read -r -a preset_args <<<"$g_args"
    # A hand-given --checkpoint-interval replaces the preset's one; extra arguments (after --) come last.
    pargs=()
    skip_next=0
    for a in "${preset_args[@]}"; do
        if ((skip_next)); then skip_next=0; continue; fi
        if [[ -n "$CKPT_INTERVAL" && "$a" == --checkpoint-interval ]]; then skip_next=1; continue; fi
        pargs+=("$a")
    done
    if [[ -n "$CKPT_INTERVAL" ]]; then pargs+=(--checkpoint-interval "$CKPT_INTERVAL"); fi
    IFS=, read -r -a algos <<<"$g_algos"
    IFS=, read -r -a envs <<<"$g_envs"
    IFS=, read -r -a sizes <<<"$g_sizes"
    IFS=, read -r -a umaxes <<<"$g_umax"
    IFS=, read -r -a sfs <<<"$g_sfs"
    if [[ "$g_seeds" =~ ^[0-9]+$ ]]; then mapfile -t seeds < <(seq 1 "$g_seeds"); else IFS=, read -r -a seeds <<<"$g_seeds"; fi
    for algo in "${algos[@]}"; do
        script="$(algo_script "$algo")"
        if [[ "$algo" == eaude* ]]; then algo_umax=("${umaxes[@]}"); else algo_umax=(3); fi
        if [[ "$algo" == polyprune_* ]]; then algo_sfs=("${sfs[@]}"); else algo_sfs=(0.95); fi
        for env in "${envs[@]}"; do
            for size in "${sizes[@]}"; do
                for umax in "${algo_umax[@]}"; do
                    for sf in "${algo_sfs[@]}"; do
                        for seed in "${seeds[@]}"; do
                            exp="$algo"
                            args=(--env-id "$env" --seed "$seed")
                            if [[ "$size" != none ]]; then exp+="_$size"; args+=(--network-size "$size"); fi
                            if [[ "$umax" != 3 ]]; then exp+="_umax$umax"; args+=(--u-max "$umax"); fi
                            if [[ "$sf" != 0.95 ]]; then exp+="_sf$sf"; args+=(--final-sparsity "$sf"); fi
                            if [[ "$algo" == dqn || "$algo" == cql || "$algo" == sac ]]; then
                                args+=(--final-sparsity 0)
                            fi
                            if [[ "$algo" == *cql ]]; then
                                ds="$DATASET_ROOT/$(game_of "$env")/1"
                                args+=(--dataset-dir "$(display_path "$ds")")
                                NEED_DATASET+=("$env|$ds")
                            fi
                            args+=(--exp-name "$exp" --output-dir "$(display_path "$OUTPUT_DIR")")
                            if ((SAVE_MODEL)); then args+=(--save-model); fi
                            prefix="${env}__${exp}__${seed}__"
                            # Presets overlap (ablation-umax reuses paper-atari's U_max = 3 runs): keep one.
                            [[ -n "${SEEN[$prefix]:-}" ]] && continue
                            SEEN[$prefix]=1
                            cmd="$(printf '%q ' "${PY[@]}" "$script" "${args[@]}" "${pargs[@]}" "${EXTRA_ARGS[@]}")"
                            RECORDS+=("$OUTPUT_DIR"$'\t'"$prefix"$'\t'"$exp"$'\t'"${cmd% }")
                        done
                    done
                done
            done
        done
    done
done

# ---------------------------------------------------------------------------------------------------------------
# Dry run: the command each pending run would execute (finished runs omitted, --resume when a checkpoint exists).
# ---------------------------------------------------------------------------------------------------------------
if ((DRY_RUN)); then
    for rec in "${RECORDS[@]}"; do
        full="$(resolve_task "$rec")"
        [[ "$full" == skip ]] || printf '%s\n' "$full"
    done
    exit 0
fi

PENDING=()
for rec in "${RECORDS[@]}"; do
    [[ "$(resolve_task "$rec")" == skip ]] || PENDING+=("$rec")
done
echo "[benchmark] ${#RECORDS[@]} runs, $((${#RECORDS[@]} - ${#PENDING[@]})) finished, ${#PENDING[@]} to run" >&2
((${#PENDING[@]})) || exit 0
mkdir -p "$OUTPUT_DIR/_logs"

# Offline datasets: the smoke preset writes its tiny one; other presets expect the DQN Replay layout to exist.
if ((${#NEED_DATASET[@]})); then
    declare -A done_ds=()
    for item in "${NEED_DATASET[@]}"; do
        env="${item%%|*}" ds="${item#*|}"
        [[ -n "${done_ds[$ds]:-}" ]] && continue
        done_ds[$ds]=1
        [[ -d "$ds/replay_logs" ]] && continue
        if [[ "$PRESET" == smoke ]]; then
            echo "[benchmark] writing the smoke dataset $ds" >&2
            "${PY[@]}" tools/write_dqn_replay_dataset.py --env-id "$env" --output-dir "$ds" "${SMOKE_DATASET_ARGS[@]}" \
                >"$OUTPUT_DIR/_logs/dataset_$(game_of "$env").log" 2>&1 ||
                die "writing the smoke dataset failed, see $OUTPUT_DIR/_logs/dataset_$(game_of "$env").log"
        else
            die "--dataset-root: missing $ds/replay_logs (download the DQN Replay Dataset, see README)"
        fi
    done
fi

# ---------------------------------------------------------------------------------------------------------------
# Slurm: one array task per pending run; each task re-resolves skip/resume when it starts.
# ---------------------------------------------------------------------------------------------------------------
if ((SLURM)); then
    command -v sbatch >/dev/null || die "--slurm: sbatch not found"
    [[ -f "$SLURM_TEMPLATE" ]] || die "--slurm-template: $SLURM_TEMPLATE not found"
    stamp="$(date +%Y%m%d-%H%M%S)-$$"
    sdir="$OUTPUT_DIR/_slurm/$stamp"
    mkdir -p "$sdir"
    {
        echo "# finish-slack=$FINISH_SLACK"
        echo "# root=$ROOT"
        printf '%s\n' "${PENDING[@]}"
    } >"$sdir/tasks.tsv"
    array="0-$((${#PENDING[@]} - 1))"
    [[ "$WORKERS" -gt 1 ]] && array+="%$WORKERS"
    read -r -a sb_extra <<<"$SBATCH_ARGS"
    jobid="$(sbatch --parsable --array="$array" --job-name="eaudeqn-${PRESET:-custom}" \
        --output="$sdir/%A_%a.out" --chdir="$ROOT" "${sb_extra[@]}" \
        "$SLURM_TEMPLATE" "$SELF" "$sdir/tasks.tsv")"
    echo "$jobid" >"$sdir/job_id"
    echo "[benchmark] submitted job array $jobid (${#PENDING[@]} tasks), logs in $sdir" >&2
    echo "$jobid"
    exit 0
fi

# ---------------------------------------------------------------------------------------------------------------
# Local workers: N lanes pull the next run from a shared counter (flock); lane i gets GPU gpus[i % n] and
# 1/(lanes per GPU) of its memory, since JAX preallocates 75% of a GPU by default.
# ---------------------------------------------------------------------------------------------------------------
if [[ -z "$GPUS" ]] && command -v nvidia-smi >/dev/null 2>&1; then
    n_gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"
    ((n_gpus > 0)) && GPUS="$(seq -s, 0 $((n_gpus - 1)))"
fi
IFS=, read -r -a gpu_list <<<"$GPUS"
counter="$(mktemp)"
echo 0 >"$counter"
trap 'rm -f "$counter" "$counter.lock"' EXIT
next_index() {
    local i
    {
        flock 9
        i="$(cat "$counter")"
        echo $((i + 1)) >"$counter"
    } 9>"$counter.lock"
    echo "$i"
}
lane() {
    local id="$1" i rec failed=0
    if ((${#gpu_list[@]})); then
        local per_gpu
        per_gpu=$(((WORKERS + ${#gpu_list[@]} - 1) / ${#gpu_list[@]}))
        export CUDA_VISIBLE_DEVICES="${gpu_list[id % ${#gpu_list[@]}]}"
        XLA_PYTHON_CLIENT_MEM_FRACTION="$(awk -v n="$per_gpu" 'BEGIN { printf "%.2f", 0.9 / n }')"
        export XLA_PYTHON_CLIENT_MEM_FRACTION
    fi
    while :; do
        i="$(next_index)"
        ((i < ${#PENDING[@]})) || break
        rec="${PENDING[$i]}"
        run_task "$rec" "$OUTPUT_DIR/_logs/$(cut -f2 <<<"$rec" | sed 's/__$//').log" || failed=1
    done
    return "$failed"
}
command -v flock >/dev/null || die "flock (util-linux) is needed for local workers"
pids=()
for ((w = 0; w < WORKERS; w++)); do
    lane "$w" &
    pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
if ((status)); then echo "[benchmark] some runs failed, see $OUTPUT_DIR/_logs" >&2; fi
exit "$status"

#!/usr/bin/env bash
# Build the GPU carry kit: what a GPU image with Python 3.12 and JAX (jax, flax, optax, numpy, tensorboard, imageio)
# lacks to run this repository's scripts, in at most 40 MiB, installable without any network.
#
#     tools/gpu_kit.sh DIR                  # on a machine with PyPI access (any Python with pip)
#     bash DIR/install.sh TARGET            # on the GPU machine, with its python3 (3.12, x86_64 Linux)
#     PYTHONPATH=TARGET python3 eaudedqn_atari_jax.py --env-id Pong-v5 ...
#
# Why a kit: the GPU machine this project can borrow has no registry, and the working tree plus the folders sent with
# it may be at most 64 MiB, while envpool's wheel alone is 61 MiB (its asset package 87 MiB). The scripts need only
# three of envpool's environment families (Atari, classic control, MuJoCo's Gymnasium tasks), so the kit keeps those
# (about 10 MiB unpacked) and the pure-Python packages the scripts import on their normal paths: tyro (flags),
# gymnasium and dm-env / dm-tree / optree (envpool's Python layer), tensorboardX (the scripts' metrics writer).
# Left out: wandb (--track only), ale-py (tools/evaluate.py's colour videos only), mujoco (rendering only), the
# other envpool families (VizDoom, Box2D, procgen, ...) and their Qt libraries and assets.
#
# MuJoCo's envpool module links libEGL.so.1 and libOpenGL.so.0 (libglvnd), which a CUDA image may not have: the kit
# carries this machine's copies and loads them only where the system has none (see envpool/mujoco/__init__.py in
# the kit). Environment: PYTHON (default python3) runs pip; the downloaded wheels stay in a temporary folder.
set -euo pipefail
trap 'echo "error: tools/gpu_kit.sh failed at line $LINENO (exit code $?)" >&2' ERR

usage() {
    echo "error: $1 (usage: tools/gpu_kit.sh DIR)" >&2
    exit 2
}
[[ $# -eq 1 ]] || usage "expected one argument, the kit folder"
[[ $1 != -* ]] || usage "unknown option $1"
DIR=$1
PYTHON=${PYTHON:-python3}
LIMIT_MIB=40
if [[ -e $DIR && ! -d $DIR ]]; then usage "$DIR exists and is not a folder"; fi
if [[ -d $DIR && -n $(ls -A "$DIR") && ! -f $DIR/MANIFEST.txt ]]; then
    usage "$DIR is not empty and holds no kit (refusing to overwrite it)"
fi
"$PYTHON" -m pip --version >/dev/null 2>&1 || usage "$PYTHON has no pip (set PYTHON to a Python with pip)"

# The Python 3.12 stack of uv.lock. mode "always": installed even if the target Python has it (the versions the
# scripts are tested with); "missing": installed only where the target Python cannot import it (generic packages a
# JAX image usually has: keeping its own copy avoids shadowing what its other packages were installed against).
# wheel spec | import name | mode
PACKAGES=(
    "envpool==1.2.7|envpool|always"
    "envpool-assets==0.4.1|envpool_assets|always"
    "dm-env==1.6|dm_env|always"
    "dm-tree==0.1.10|tree|always"
    "optree==0.20.0|optree|always"
    "gymnasium==1.4.0|gymnasium|always"
    "farama-notifications==0.0.6|farama_notifications|always"
    "tyro==1.0.17|tyro|always"
    "docstring-parser==0.18.0|docstring_parser|always"
    "typeguard==4.6.1|typeguard|always"
    "tensorboardx==2.6.5|tensorboardX|always"
    "cloudpickle==3.1.3|cloudpickle|missing"
    "wrapt==2.5.2|wrapt|missing"
    "attrs==26.1.0|attr|missing"
    "absl-py==2.5.1|absl|missing"
    "typing-extensions==4.16.0|typing_extensions|missing"
    "packaging==26.3|packaging|missing"
    "protobuf==7.36.2|google.protobuf|missing"
)

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "downloading ${#PACKAGES[@]} wheels for CPython 3.12, manylinux x86_64 ..." >&2
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --dest "$WORK/wheels" "${PACKAGES[@]%%|*}"

rm -rf "$DIR"
mkdir -p "$DIR/packages"
MANIFEST=$DIR/MANIFEST.txt
echo "# archive | import name | mode | wheel" >"$MANIFEST"
for entry in "${PACKAGES[@]}"; do
    IFS='|' read -r spec module mode <<<"$entry"
    name=${spec%%==*}
    version=${spec##*==}
    # wheel file names use underscores and may differ in case (tensorboardX)
    pattern=$(echo "$name" | tr '-' '_')
    wheel=$(find "$WORK/wheels" -maxdepth 1 -iname "${pattern}-${version}-*.whl" -print -quit)
    [[ -n $wheel ]] || { echo "error: no wheel of $spec was downloaded" >&2; exit 1; }
    stage=$WORK/stage/$name
    mkdir -p "$stage"
    "$PYTHON" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$wheel" "$stage"
    # RECORD lists files the cut below removes; without it pip treats the package as foreign, which is what it is
    find "$stage" -path '*.dist-info/RECORD' -delete
    find "$stage" -name '__pycache__' -type d -prune -exec rm -rf {} +
    case $name in
    envpool)
        # Keep Atari, classic control and MuJoCo's Gymnasium tasks; everything else (and Qt, for VizDoom) goes.
        ep=$stage/envpool
        find "$ep" -mindepth 1 -maxdepth 1 -type d \
            ! -name python ! -name atari ! -name classic_control ! -name mujoco -exec rm -rf {} +
        find "$ep/mujoco" -mindepth 1 -maxdepth 1 ! -name __init__.py ! -name gym \
            ! -name mujoco_gym_envpool.so -exec rm -rf {} +
        rm -rf "$stage/envpool.libs" "$stage"/envpool-*.dist-info/licenses/qt6
        find "$ep" -name '*_test.py' -delete -o -name 'seed_test_utils.py' -delete -o -name 'render_test_utils.py' -delete
        cat >"$ep/entry.py" <<'EOF'
"""Entry point for the envs of the GPU kit (tools/gpu_kit.sh): only the families this repository's scripts use."""

import envpool.atari.registration  # noqa: F401
import envpool.classic_control.registration  # noqa: F401
import envpool.mujoco.gym.registration  # noqa: F401
EOF
        gl=()
        for lib in libGLdispatch.so.0 libOpenGL.so.0 libEGL.so.1; do
            # no early `exit` in awk: ldconfig would die of SIGPIPE, and pipefail would end the script
            path=$(/sbin/ldconfig -p 2>/dev/null | awk -v lib="$lib" '!found && $1 == lib && /x86-64/ {print $NF; found = 1}')
            if [[ -n $path ]]; then
                mkdir -p "$ep/mujoco/gl"
                cp -L "$path" "$ep/mujoco/gl/$lib"
                gl+=("$lib")
            fi
        done
        if [[ ${#gl[@]} -lt 3 ]]; then
            echo "warning: this machine lacks libglvnd (libEGL.so.1, libOpenGL.so.0, libGLdispatch.so.0): the kit's" \
                "MuJoCo tasks will need them on the GPU machine" >&2
        fi
        cat >>"$ep/mujoco/__init__.py" <<'EOF'

# GPU kit (tools/gpu_kit.sh): mujoco_gym_envpool.so links libEGL.so.1 and libOpenGL.so.0, which a CUDA image may
# lack. Load the system's copies if it has them, else the kit's, globally, so that the module's dependencies resolve
# by their names; they are used only for rendering.
def _load_gl() -> None:
    import ctypes
    import os

    folder = os.path.join(os.path.dirname(__file__), "gl")
    for lib in ("libGLdispatch.so.0", "libOpenGL.so.0", "libEGL.so.1"):
        try:
            ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            if os.path.exists(os.path.join(folder, lib)):
                ctypes.CDLL(os.path.join(folder, lib), mode=ctypes.RTLD_GLOBAL)


_load_gl()
EOF
        ;;
    envpool-assets)
        # Atari ROMs and MuJoCo's Gymnasium models: 0.7 MiB of the package's 87 MiB
        ea=$stage/envpool_assets
        find "$ea" -mindepth 1 -maxdepth 1 -type d ! -name atari ! -name mujoco -exec rm -rf {} +
        find "$ea/atari" -mindepth 1 -maxdepth 1 ! -name roms -exec rm -rf {} +
        find "$ea/mujoco" -mindepth 1 -maxdepth 1 ! -name assets_gym -exec rm -rf {} +
        ;;
    esac
    # xz: Python's tarfile reads it on the GPU machine without any extra tool
    tar -C "$stage" -cJf "$DIR/packages/$name.tar.xz" .
    echo "$name.tar.xz | $module | $mode | $(basename "$wheel")" >>"$MANIFEST"
done

cat >"$DIR/install.sh" <<'INSTALL'
#!/usr/bin/env bash
# Install the GPU kit into folder TARGET with this machine's python3 (no network): then
#     PYTHONPATH=TARGET python3 eaudedqn_atari_jax.py ...
# Packages marked "missing" in MANIFEST.txt are skipped where python3 already imports them. PYTHON overrides python3.
set -euo pipefail
[[ $# -eq 1 && $1 != -* ]] || { echo "error: expected one argument, the install folder (usage: bash install.sh TARGET)" >&2; exit 2; }
KIT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TARGET=$1
PYTHON=${PYTHON:-python3}
"$PYTHON" - "$KIT" "$TARGET" <<'EOF'
import importlib.util, platform, sys, tarfile
from pathlib import Path

kit, target = Path(sys.argv[1]), Path(sys.argv[2])
if sys.version_info[:2] != (3, 12) or platform.machine() != "x86_64" or sys.platform != "linux":
    print(f"error: the kit holds CPython 3.12 x86_64 Linux binaries; this is Python {platform.python_version()} on "
          f"{sys.platform} {platform.machine()}", file=sys.stderr)
    raise SystemExit(2)
if target.exists() and not target.is_dir():
    print(f"error: {target} exists and is not a folder", file=sys.stderr)
    raise SystemExit(2)
target.mkdir(parents=True, exist_ok=True)
for line in (kit / "MANIFEST.txt").read_text().splitlines():
    if line.startswith("#") or not line.strip():
        continue
    archive, module, mode, _ = (field.strip() for field in line.split("|"))
    try:
        present = mode == "missing" and importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent is missing
        present = False
    if present:
        print(f"skip {archive}: this python3 has {module}")
        continue
    with tarfile.open(kit / "packages" / archive) as tar:
        tar.extractall(target, filter="data")
    print(f"installed {archive}")
EOF
PYTHONPATH="$TARGET${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -W ignore -c '
import envpool, gymnasium, tensorboardX, tyro
for env_id in ("CartPole-v1", "Pong-v5", "HalfCheetah-v5"):
    envpool.make(env_id, env_type="gymnasium", num_envs=1).reset()
print("kit works: envpool", envpool.__version__, "(CartPole-v1, Pong-v5, HalfCheetah-v5), gymnasium", gymnasium.__version__)
'
echo "run the scripts with: PYTHONPATH=$TARGET $PYTHON eaudedqn_atari_jax.py ..."
INSTALL
chmod +x "$DIR/install.sh"

size=$(du -sk "$DIR" | cut -f1)
echo "kit: $DIR, $((size / 1024)).$(((size % 1024) * 10 / 1024)) MiB (limit $LIMIT_MIB MiB)" >&2
if ((size > LIMIT_MIB * 1024)); then
    echo "error: the kit is larger than $LIMIT_MIB MiB" >&2
    exit 1
fi

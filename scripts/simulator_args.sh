# KEY VALUE arguments shared by the simulation-server launchers; sourced by launch_simulator_*.sh,
# it sets MODEL_PATH PORT TP GPU_MEMORY SERVED_NAME HOST (and the launcher's own EXTRA_KEYS, whose
# defaults it sets beforehand) or exits 2 naming the bad argument.

KEYS="MODEL_PATH PORT TP GPU_MEMORY SERVED_NAME HOST${EXTRA_KEYS:+ $EXTRA_KEYS}"
usage() {
    echo "$1" >&2
    echo "usage: $0 MODEL_PATH <path or hub id> [PORT 6001] [TP 1] [GPU_MEMORY 0.8] [SERVED_NAME name] [HOST 0.0.0.0]${EXTRA_USAGE:+ $EXTRA_USAGE}" >&2
    echo "valid keys: $KEYS" >&2
    exit 2
}

# Defaults are set here, not read from the environment, so a stray exported PORT cannot leak in.
MODEL_PATH="" PORT=6001 TP=1 GPU_MEMORY=0.8 SERVED_NAME="" HOST=0.0.0.0
while [ $# -gt 0 ]; do
    case " $KEYS " in
        *" $1 "*) ;;
        *) usage "unknown key '$1' (arguments are KEY VALUE pairs)" ;;
    esac
    [ $# -ge 2 ] || usage "key '$1' has no value"
    printf -v "$1" '%s' "$2"
    shift 2
done
[ -n "$MODEL_PATH" ] || usage "MODEL_PATH is required"
[[ "$PORT" =~ ^[0-9]+$ ]] || usage "PORT must be a port number, got '$PORT'"
[[ "$TP" =~ ^[1-9][0-9]*$ ]] || usage "TP must be a positive integer, got '$TP'"
[[ "$GPU_MEMORY" =~ ^(0?\.[0-9]*[1-9][0-9]*|1(\.0*)?)$ ]] || usage "GPU_MEMORY must be a fraction in (0, 1], got '$GPU_MEMORY'"
SERVED_NAME=${SERVED_NAME:-$(basename "$MODEL_PATH")}

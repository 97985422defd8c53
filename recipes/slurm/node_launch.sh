#!/usr/bin/env bash
# srun --ntasks-per-node 1 bash recipes/slurm/node_launch.sh -m matrix_llm.cli sft --config ...
# One node's `accelerate launch` of a multi-node run: the sbatch files beside it start it once per node with srun.
# From SLURM: SLURM_NNODES (num_machines), SLURM_NODEID (machine_rank), the first host of SLURM_JOB_NODELIST
# (main_process_ip) and SLURM_JOB_ID (the rendezvous port unless MAIN_PROCESS_PORT is set).
# From the sbatch file: ACCELERATE_CONFIG (a recipes/accelerate/*.yaml profile), GPUS_PER_NODE, RDZV_TIMEOUT
# (seconds the nodes wait for each other before failing with "n/N clients joined" instead of hanging).
set -euo pipefail

fail() { echo "node_launch.sh: $*" >&2; exit 2; }
: "${ACCELERATE_CONFIG:?set ACCELERATE_CONFIG to an accelerate profile, e.g. recipes/accelerate/deepspeed_zero2.yaml}"
: "${GPUS_PER_NODE:?set GPUS_PER_NODE to the number of processes (GPUs) per node}"
nnodes=${SLURM_NNODES:?not inside a SLURM allocation (SLURM_NNODES is unset): start this with srun from an sbatch file}
node=${SLURM_NODEID:?SLURM_NODEID is unset: start this with srun (one task per node)}
[[ $nnodes =~ ^[1-9][0-9]*$ ]] || fail "SLURM_NNODES=$nnodes is not a positive number of nodes"
[[ $node =~ ^[0-9]+$ ]] && ((node < nnodes)) ||
    fail "SLURM_NODEID=$node is not a machine rank of this $nnodes-node job (0 to $((nnodes - 1))): a wrong rank would wait for a node that never joins"
[[ $GPUS_PER_NODE =~ ^[1-9][0-9]*$ ]] || fail "GPUS_PER_NODE=$GPUS_PER_NODE is not a positive number"
head_node=$(scontrol show hostnames "${SLURM_JOB_NODELIST:?SLURM_JOB_NODELIST is unset}" | head -n 1)
[[ -n $head_node ]] || fail "no host in SLURM_JOB_NODELIST=$SLURM_JOB_NODELIST"
port=${MAIN_PROCESS_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}  # one port per job: two jobs on a node do not collide

exec "${ACCELERATE:-accelerate}" launch --config_file "$ACCELERATE_CONFIG" \
    --num_machines "$nnodes" --num_processes $((nnodes * GPUS_PER_NODE)) --machine_rank "$node" \
    --main_process_ip "$head_node" --main_process_port "$port" --rdzv_conf "timeout=${RDZV_TIMEOUT:-900}" \
    "$@"

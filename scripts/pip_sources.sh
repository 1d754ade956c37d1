# Sourced by env.sh and lock.sh: where pip finds the CPU build of torch. From the machine's wheel folder
# when it has one (pip's find-links), else PyTorch's CPU index. PyPI has only CUDA builds of torch.
TORCH_INDEX=()
ls /opt/wheels/torch-*+cpu* >/dev/null 2>&1 || TORCH_INDEX=(--extra-index-url https://download.pytorch.org/whl/cpu)
# The extras of the locked install: what the tests, the service and the demo use on a CPU host.
LOCKED_EXTRAS="cpu,service,flower,test"

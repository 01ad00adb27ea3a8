# Sourced by the device scripts (gpu_check.sh, imagenet_check.sh, evidence_gpu.sh): installs the
# carried omegaconf wheels (.whl, git-ignored) to /tmp/site when omegaconf is missing, puts the
# checkout on PYTHONPATH and unbuffers Python's output.
if [ -d .whl ] && ! python3 -c "import omegaconf" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

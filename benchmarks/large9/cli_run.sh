#!/bin/bash
# usage: cli_run.sh NAME...  (sequential) ; src snapshot ${SRC:-src} (ran from a copy of src at commit 29fcefb); images from mkimg.py in img/
cd "$(dirname "$0")"
export OMP_NUM_THREADS=${THREADS:-1} PYTHONPATH=${SRC:-src}
for n in "$@"; do
  /usr/bin/time -v /work/main/.venv/bin/python -m evodenoise denoise img/${n}_noisy.npy --sigma 25 \
     --reference img/${n}_clean.npy -o out/${n}.npy --force --json > out/${n}.json 2> out/${n}.err
done

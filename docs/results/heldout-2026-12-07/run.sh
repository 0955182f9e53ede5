#!/bin/bash
# Held-out operating points, 2026-12-07: one calibration point at 90% busy, shrink (and one at 30%, shrink, for the same judged runs)
set -x
cd /work/main
O=runs/ho7
log() { echo "$(date -u +%H:%M:%S) $(cat /proc/loadavg) $*" >> $O/timeline.txt; }
log start
.venv/bin/offramp profile calibrate fmnist-resnet-cpu -o $O/cal-090-shrink.json --loads 0.9 --modes shrink --requests 3000 --keep-runs $O/cal-090-shrink-runs --quiet
log cal090
.venv/bin/offramp profile calibrate fmnist-resnet-cpu -o $O/cal-030-shrink.json --loads 0.3 --modes shrink --requests 3000 --keep-runs $O/cal-030-shrink-runs --quiet
log cal030
V="--profile $O/cal-090-shrink.json --profiler-costs --served-requests 0 --repeats 3 --requests 5000"
.venv/bin/offramp validate examples/validate-fmnist-entropy.yaml $V --utilisation 0.3,0.6,0.9 --modes none,keep,shrink -o $O/heldout-loads
log loads
for w in 0.5 2 8; do .venv/bin/offramp validate examples/validate-fmnist-entropy.yaml $V --rates 330 --modes none,keep,shrink --set server.max_wait_ms=$w -o $O/dec-wait$w; log wait$w; done
for mb in 8 64; do .venv/bin/offramp validate examples/validate-fmnist-entropy.yaml $V --rates 330 --modes none,keep,shrink --set server.max_batch=$mb -o $O/dec-mb$mb; log mb$mb; done
log done

#!/bin/bash
cd /work/main
O=runs/ho7/idle
mkdir -p $O
log() { echo "$(date -u +%H:%M:%S) $(cat /proc/loadavg) $*" >> $O/timeline.txt; }
cal() { .venv/bin/offramp profile calibrate fmnist-resnet-cpu -o $O/$1.json --loads 0.3 --modes shrink --requests 3000 --keep-runs $O/$1-runs --quiet; log $1; }
log start; sleep 90; log idle90
cal A
.venv/bin/offramp validate examples/validate-fmnist-entropy.yaml --profile fmnist-resnet-cpu --profiler-costs --served-requests 0 --repeats 2 --requests 8000 --utilisation 0.6 --modes none -o $O/burn > /dev/null 2>&1; log burn
cal B
sleep 90; log idle90b
cal C
log done

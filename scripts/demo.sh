#!/usr/bin/env bash
# The main job end to end on this machine: a sample corpus is generated, a worker started
# (`celery -A worker worker -Q gpu`), the job submitted, scored, exported and its top documents shown.
# Embedded defaults: SQLite ledger (in ~/.cache/rerankq/demo, with the corpus, export and worker log), Redis if
# one answers (else an SQLite-backed broker there), the configured model if its weights are here (else the tiny
# offline model). Its last line prints the variables to go on by hand. Arguments go to `producer demo`.
source "$(dirname "$0")/env.sh"
exec producer demo "$@"

"""Bad input, one file per kind: every kind is refused by the real `producer` CLI (or the worker, or the
Python API) with one clear line naming the file, row and field, exit 3, no traceback, no credentials in any
output, no job in the SQL ledger and no message in the queue. Nothing lost, nothing half-written.

Fast: no engine is ever loaded (the one worker test exits before it would load one)."""

"""The core every rerankq process shares: settings, the prompt recipe, manifests, the broker's chunk
messages and the SQL ledger (``rerankq.store``). The producer CLI and Python API (``producer``), the
HTTP service (``producer.service``) and the Celery workers (``worker``) are thin layers over it."""

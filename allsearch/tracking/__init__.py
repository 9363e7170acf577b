"""Where a trial's figures go: MLflow (tracking), a record folder (recorder, record_format), the
tracked trial (tracked) and its background writer, store faults (outage, sqlite_store). Imports
core, data and training."""

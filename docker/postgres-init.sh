#!/bin/sh
# Runs once, when the PostgreSQL volume is first initialized: the `optuna` database is made
# by POSTGRES_DB; MLflow gets a database of its own.
set -e
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname optuna -c "CREATE DATABASE mlflow OWNER \"$POSTGRES_USER\""

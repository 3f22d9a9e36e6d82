"""Ingest: telemetry from MQTT into storage, each (device, seq) exactly once."""

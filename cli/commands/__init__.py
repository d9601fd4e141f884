"""The commands, by verb: data (sample videos, model, frames), pipeline (build, validate, rebuild), release
(promote, rollback, status, report, gate) and operations (serve, deploy, watch, nightly, demo)."""

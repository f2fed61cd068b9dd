//! End-to-end tests live in `tests/tests/e2e/`, one module per behaviour, in one test binary.

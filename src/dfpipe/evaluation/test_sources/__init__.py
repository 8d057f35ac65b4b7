"""Test sources: datasets that only test the trained models (config `evaluate.test_sources`), one module per kind."""

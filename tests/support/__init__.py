"""Test support shared by every layer: AWS endpoints, servers, fakes, factories and helpers. No tests here."""

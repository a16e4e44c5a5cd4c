"""The common library of LLM Tuner's services: what every service needs exactly once."""

"""The names the SageMaker emulator and the generation server share, importable without torch."""

ADAPTER_HEADER = "X-Llmt-Adapter"  # which adapter a request runs on (absent: the base model); emulator-only
ADAPTERS_PATH = "/_emulator/adapters"  # GET lists, POST {"name", "path"} loads, DELETE /{name} unloads

"""A local stand-in for the inference container the platform runs on SageMaker (AWS's LMI container with
vLLM and LoRA): a CPU generation server with transformers and peft that takes and answers LMI's chat
completions schema, so the inference service's code path is the same locally and on AWS.

    python -m deploy.local.generation_server --model-dir DIR --port N

The SageMaker emulator starts one per base inference component and loads each adapter inference component
into it. Layout: `app.py` (HTTP edge: /ping, /invocations, the emulator's /_emulator/adapters routes),
`chat_request.py` (the request schema and its 400s), `engine.py` (model, chat template, the decode loop,
scoring, LoRA adapters), `decoding.py` (next-token choice, stop strings), `scheduler.py` (the bounded queue
and the one generation thread), `responses.py` (LMI's response shapes).

Beyond LMI, one documented local extension: `{"messages": [..., {"role": "assistant", ...}], "llmt_score":
true}` answers `{"object": "llmt.score", "loss": ..., "tokens": n}`, the mean token loss of that final
assistant message (LMI answers such a request with a 4xx, which callers read as "loss not exposed").
"""

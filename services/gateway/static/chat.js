// Chat completions from the page: POST /v1/chat/completions with stream: true, its Server-Sent Events read from
// fetch's body (each `data: {chunk}` carries a delta; `data: [DONE]` ends it), and the same call written out for
// the official openai Python SDK.

import { ApiError, apiStream } from "./api.js";

/** The events of an SSE body, as the `data` of each (joined lines); comments and other fields are skipped. */
async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      if (data.length) yield data.join("\n");
      return;
    }
    buffer += value;
    let newline;
    while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
      if (line === "") {
        if (data.length) yield data.join("\n");
        data = [];
      } else if (line.startsWith("data:")) {
        data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
      }
    }
  }
}

/**
 * Stream one answer: `onDelta(text)` for each piece as it arrives. Resolves to {text, finishReason, usage};
 * rejects with an ApiError (the error envelope's message, type, code) or an AbortError when `signal` stops it.
 */
export async function streamChat({ model, messages, temperature, maxTokens, signal, onDelta }) {
  const response = await apiStream("/v1/chat/completions", { method: "POST", signal, json: {
    model, messages, temperature, max_tokens: maxTokens, stream: true, stream_options: { include_usage: true } } });
  let text = "";
  let finishReason = null;
  let usage = null;
  for await (const data of sseData(response.body)) {
    if (data === "[DONE]") return { text, finishReason, usage };
    let chunk;
    try {
      chunk = JSON.parse(data);
    } catch {
      continue;
    }
    if (chunk.error) throw new ApiError(chunk.error.status || 500, chunk, null); // failed after the first byte
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices || []) {
      const piece = choice.delta && choice.delta.content;
      if (piece) {
        text += piece;
        onDelta(piece);
      }
      if (choice.finish_reason) finishReason = choice.finish_reason;
    }
  }
  throw new ApiError(0, { error: { message: "The answer was cut off before it finished (the connection closed)." } }, null);
}

function pyString(value) {
  return JSON.stringify(String(value)); // a JSON string literal is a valid Python one
}

function pyNumber(value) {
  return Number.isFinite(value) ? String(value) : "None";
}

/** The same chat from Python with the official openai SDK, streamed as the playground does. */
export function chatSnippet({ model, messages, temperature, maxTokens }) {
  const lines = [
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url=${pyString(`${location.origin}/v1`)}, api_key="sk-...")  # an API key from your Account page`,
    "",
    "stream = client.chat.completions.create(",
    `    model=${pyString(model)},`,
    "    messages=[",
    ...messages.map((m) => `        {"role": ${pyString(m.role)}, "content": ${pyString(m.content)}},`),
    "    ],",
    `    temperature=${pyNumber(temperature)},`,
    `    max_tokens=${pyNumber(maxTokens)},`,
    "    stream=True,",
    ")",
    "for chunk in stream:",
    "    if chunk.choices:",
    "        print(chunk.choices[0].delta.content or \"\", end=\"\", flush=True)",
    "print()",
  ];
  return lines.join("\n");
}

// The official openai Node client against the gateway: the same steps as the Python conformance test.
// Usage: node conformance.mjs BASE_URL   (BASE_URL ends in /v1). Prints one JSON summary line.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.argv[2], apiKey: "conformance", maxRetries: 0 });
const messages = [{ role: "user", content: "hi" }];
const summary = {};

const models = await client.models.list();
summary.models = models.data.map((m) => m.id).sort();
summary.retrieved = (await client.models.retrieve("tiny-8b")).id;

const chat = await client.chat.completions.create({ model: "tiny-8b", messages });
summary.chat = chat.choices[0].message.content;
summary.chat_usage = chat.usage.total_tokens;

const completion = await client.completions.create({ model: "tiny-8b", prompt: "tell me" });
summary.completion = completion.choices[0].text;

async function collect(params) {
  const stream = await client.chat.completions.create({ model: "tiny-8b", messages, stream: true, ...params });
  let text = "";
  let usage = null;
  const args = {};
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage.total_tokens;
    for (const choice of chunk.choices) {
      text += choice.delta.content ?? "";
      for (const call of choice.delta.tool_calls ?? []) {
        const slot = (args[call.index] ??= { name: "", arguments: "" });
        slot.name += call.function?.name ?? "";
        slot.arguments += call.function?.arguments ?? "";
      }
    }
  }
  return { text, usage, calls: Object.values(args) };
}

const plain = await collect({});
summary.stream_text = plain.text;
summary.stream_usage = plain.usage;
const withUsage = await collect({ stream_options: { include_usage: true } });
summary.stream_usage_requested = withUsage.usage;
const tools = [{ type: "function", function: { name: "weather", parameters: { type: "object" } } }];
const toolCall = await collect({ tools });
summary.tool_call = toolCall.calls[0];

// No encoding_format: the client asks for base64 itself and decodes it into floats.
const embedding = await client.embeddings.create({ model: "embed-small", input: ["a", "b"] });
summary.embeddings = embedding.data.map((d) => Array.from(d.embedding));
console.log(JSON.stringify(summary));

// The official `openai` Node client against the gateway's Responses API: create (streaming and not) and
// retrieve. Prints one JSON summary line for the Python test to check. Usage: node responses.mjs BASE_URL
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.argv[2], apiKey: "node-test-key", maxRetries: 0 });

const created = await client.responses.create({
  model: "tiny-8b",
  input: "How green is this request?",
  max_output_tokens: 6,
});
const retrieved = await client.responses.retrieve(created.id);

const stream = await client.responses.create({
  model: "tiny-8b",
  input: "Stream it, please",
  max_output_tokens: 4,
  stream: true,
});
const types = [];
let streamedText = "";
let streamedUsage = null;
for await (const event of stream) {
  types.push(event.type);
  if (event.type === "response.output_text.delta") streamedText += event.delta;
  if (event.type === "response.completed") streamedUsage = event.response.usage;
}

console.log(
  JSON.stringify({
    text: created.output_text,
    usage: created.usage,
    retrievedId: retrieved.id,
    createdId: created.id,
    streamedText,
    streamedUsage,
    first: types[0],
    last: types[types.length - 1],
  }),
);

// The official openai Node client against polyroute: one chat and one streamed chat; prints what it got as JSON.
// Usage: node chat.mjs <base url, e.g. http://127.0.0.1:8080/v1> <api key> <model>
import OpenAI from "openai";

const [baseURL, apiKey, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const messages = [{ role: "user", content: "hello from node" }];

const { data: reply, response } = await client.chat.completions.create({ model, messages }).withResponse();

const stream = await client.chat.completions.create({
  model,
  messages,
  stream: true,
  stream_options: { include_usage: true },
});
let text = "";
let chunks = 0;
let finish = null;
let usage = null;
for await (const chunk of stream) {
  chunks += 1;
  const choice = chunk.choices[0];
  if (choice?.delta?.content) text += choice.delta.content;
  if (choice?.finish_reason) finish = choice.finish_reason;
  if (chunk.usage) usage = chunk.usage;
}

let refused = null;
try {
  await new OpenAI({ baseURL, apiKey: "sk-wrong", maxRetries: 0 }).chat.completions.create({ model, messages });
} catch (err) {
  refused = { status: err.status, type: err.type, name: err.constructor.name };
}

console.log(JSON.stringify({
  reply: {
    content: reply.choices[0].message.content,
    finish: reply.choices[0].finish_reason,
    usage: reply.usage,
    deployment: response.headers.get("x-polyroute-deployment"),
  },
  stream: { text, chunks, finish, usage },
  refused,
}));

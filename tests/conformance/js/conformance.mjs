// Runs one scenario of the official npm `replicate` client against the flux-tools emulator and
// prints its outcome as one JSON line on stdout. Driven by tests/conformance/test_js_client.py.
//
//   node conformance.mjs SCENARIO
//
// Environment: FLUX_EMULATOR_BASE (the /v1 base: the npm client's `baseUrl`),
// REPLICATE_API_TOKEN (may be unset), NODE_EXTRA_CA_CERTS (the emulator's CA in HTTPS mode),
// FLUX_TEST_IMAGE (a PNG file, for the file input scenarios).
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import Replicate, { validateWebhook } from "replicate";

const baseUrl = process.env.FLUX_EMULATOR_BASE;
const replicate = new Replicate({ baseUrl, auth: process.env.REPLICATE_API_TOKEN });
const PRO = "black-forest-labs/flux-pro";
const SCHNELL = "black-forest-labs/flux-schnell";

async function describe(value) {
  // A FileOutput is a ReadableStream with url() and blob(); anything else is shown as it is.
  if (value && typeof value.blob === "function" && typeof value.url === "function") {
    const blob = await value.blob();
    const head = Buffer.from(await blob.slice(0, 4).arrayBuffer()).toString("latin1");
    return {
      kind: "FileOutput",
      url: value.url().href,
      text: String(value),
      type: blob.type,
      size: blob.size,
      head,
    };
  }
  if (Array.isArray(value)) {
    return Promise.all(value.map(describe));
  }
  return { kind: value === null ? "null" : typeof value, value };
}

async function failure(promise) {
  try {
    await promise;
    return { raised: false };
  } catch (error) {
    return {
      raised: true,
      name: error.name,
      message: String(error.message),
      status: error.response ? error.response.status : null,
      retryAfter: error.response ? error.response.headers.get("retry-after") : null,
    };
  }
}

const scenarios = {
  async run_block() {
    return { output: await describe(await replicate.run(PRO, { input: { prompt: "a fox" } })) };
  },
  async run_block_short_wait() {
    // The wait (1 s) runs out before the model (2 s) is done: the answer is "starting", then polls.
    const output = await replicate.run(PRO, {
      input: { prompt: "slow [emulator:latency=2]" },
      wait: { mode: "block", timeout: 1 },
    });
    return { output: await describe(output) };
  },
  async run_poll() {
    const seen = [];
    const output = await replicate.run(
      PRO,
      { input: { prompt: "polled" }, wait: { mode: "poll", interval: 100 } },
      (prediction) => seen.push(prediction.status)
    );
    return { output: await describe(output), seen };
  },
  async run_list_output() {
    const output = await replicate.run(SCHNELL, {
      input: { prompt: "two", num_outputs: 2 },
    });
    return { output: await describe(output) };
  },
  async run_by_version() {
    const model = await replicate.models.get("black-forest-labs", "flux-schnell");
    const ref = `${SCHNELL}:${model.latest_version.id}`;
    const output = await replicate.run(ref, { input: { prompt: "versioned" } });
    return { version: model.latest_version.id, output: await describe(output) };
  },
  async predictions() {
    const created = await replicate.predictions.create({
      model: PRO,
      input: { prompt: "created" },
    });
    const got = await replicate.predictions.get(created.id);
    const done = await replicate.wait(created, { interval: 100 });
    const hung = await replicate.predictions.create({
      model: PRO,
      input: { prompt: "forever [emulator:hang]" },
    });
    const canceled = await replicate.predictions.cancel(hung.id);
    return {
      created: created.status,
      got: got.id === created.id,
      done: done.status,
      output: done.output,
      canceled: canceled.status,
    };
  },
  async file_input() {
    // A Buffer input: uploaded to the Files API first (the default strategy), then its URL sent;
    // if the upload fails with a 5xx, sent inline as a data: URI. (The explicit "data-uri"
    // strategy of 1.4.0 passes the client itself as the input: broken against Replicate too.)
    const output = await replicate.run("black-forest-labs/flux-kontext-pro", {
      input: { prompt: "gold", input_image: readFileSync(process.env.FLUX_TEST_IMAGE) },
    });
    return { output: await describe(output) };
  },
  async webhook() {
    // A receiver on loopback; the completed webhook is checked with the client's validateWebhook.
    let resolve;
    const arrived = new Promise((r) => {
      resolve = r;
    });
    const server = createServer((request, response) => {
      let body = "";
      request.on("data", (chunk) => {
        body += chunk;
      });
      request.on("end", () => {
        response.writeHead(204).end();
        resolve({ headers: request.headers, body });
      });
    });
    await new Promise((r) => server.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${server.address().port}/hook`;
    await replicate.run(PRO, {
      input: { prompt: "hooked" },
      webhook: url,
      webhook_events_filter: ["completed"],
    });
    const received = await arrived;
    server.close();
    const { key } = await replicate.webhooks.default.secret.get();
    const valid = await validateWebhook({ headers: received.headers, body: received.body }, key);
    const tampered = await validateWebhook(
      { headers: received.headers, body: `${received.body} ` },
      key
    );
    return { valid, tampered, status: JSON.parse(received.body).status };
  },
  async stream() {
    const events = [];
    for await (const event of replicate.stream(SCHNELL, { input: { prompt: "streamed" } })) {
      events.push({ event: event.event, id: event.id, data: await describe(event.data) });
    }
    return { events };
  },
  async invalid_input() {
    return failure(replicate.run(PRO, { input: { prompt: "x", steps: 99 } }));
  },
  async unauthenticated() {
    return failure(replicate.predictions.create({ model: PRO, input: { prompt: "x" } }));
  },
  async throttled() {
    await replicate.predictions.create({ model: PRO, input: { prompt: "first" } });
    return failure(replicate.predictions.create({ model: PRO, input: { prompt: "second" } }));
  },
  async moderated() {
    return failure(replicate.run(PRO, { input: { prompt: "x [emulator:moderate]" } }));
  },
  async list() {
    const first = await replicate.predictions.list();
    const ids = [];
    for await (const page of replicate.paginate(replicate.predictions.list)) {
      ids.push(...page.map((p) => p.id));
    }
    return { first: first.results.map((p) => p.id), next: first.next, ids };
  },
  async models_get() {
    const model = await replicate.models.get("black-forest-labs", "flux-2-pro");
    const schemas = model.latest_version.openapi_schema.components.schemas;
    return {
      owner: model.owner,
      name: model.name,
      version: model.latest_version.id,
      input: Object.keys(schemas.Input.properties),
      output: schemas.Output,
    };
  },
  async account() {
    return await replicate.accounts.current();
  },
};

const name = process.argv[2];
if (!(name in scenarios)) {
  console.error(`unknown scenario ${name}; known: ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
const result = await scenarios[name]();
process.stdout.write(`${JSON.stringify(result)}\n`);

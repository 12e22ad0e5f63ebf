// Renders the FLUX MCP App viewer in headless Chromium, inside host.js (the official ext-apps host
// bridge), against a running FLUX MCP server; clicks through it and reports what it saw as one
// JSON line on stdout. Driven by tests/mcp/test_app_viewer.py:
//
//   node run.mjs '{"mcpUrl": "http://127.0.0.1:PORT/mcp", "chromium": "/usr/bin/chromium",
//                  "outDir": "/tmp/x", "prompt": "...", "instruction": "..."}'
//
// The page is served from 127.0.0.1 with /mcp proxied to the server (one origin, as a web
// host's own backend would be). Every request the browser makes is recorded.
import { build } from "esbuild";
import http from "node:http";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const options = JSON.parse(process.argv[2]);
const WIDTH = 720;
const STEP_TIMEOUT = 20000;
const began = Date.now();

// Progress on stderr: where a run got to, when it fails.
function step(name) {
  process.stderr.write(`[${((Date.now() - began) / 1000).toFixed(1)} s] ${name}\n`);
}

async function bundle() {
  const out = await build({
    entryPoints: [path.join(here, "host.js")],
    bundle: true,
    format: "esm",
    platform: "browser",
    write: false,
    logLevel: "silent",
  });
  return out.outputFiles[0].text;
}

function serve(script, target) {
  const page = `<!doctype html><html><head><meta charset="utf-8"><title>host</title></head>
<body style="margin:0;padding:16px;background:#f0efeb;font-family:sans-serif">
<div id="host"></div><script type="module">${script.replace(/<\/script/gi, "<\\/script")}</script>
</body></html>`;
  const upstream = new URL(target);
  const server = http.createServer((req, res) => {
    if (req.url === "/" || req.url === "/index.html") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      res.end(page);
      return;
    }
    if (req.url === "/favicon.ico") {
      res.writeHead(204);
      res.end();
      return;
    }
    if (!req.url.startsWith("/mcp")) {
      res.writeHead(404);
      res.end();
      return;
    }
    const headers = { ...req.headers, host: upstream.host };
    delete headers.origin;
    delete headers.referer;
    const proxied = http.request(
      {
        hostname: upstream.hostname,
        port: upstream.port,
        path: upstream.pathname + req.url.slice("/mcp".length),
        method: req.method,
        headers,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    proxied.on("error", () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(proxied);
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}

async function facts(view) {
  return view.locator("body").evaluate(() => {
    const $ = (id) => document.getElementById(id);
    const image = $("image");
    return {
      model: $("model").textContent,
      prompt: $("prompt").textContent,
      seed: $("seed").textContent,
      timings: $("timings").textContent,
      path: $("path").textContent,
      error: $("error").hidden ? null : $("error").textContent,
      state: $("state").textContent,
      thumbnails: document.querySelectorAll("#strip li").length,
      imageSrcPrefix: image.src.slice(0, 23),
      imageSrcLength: image.src.length,
      imageNatural: [image.naturalWidth, image.naturalHeight],
      imageShown: [image.clientWidth, image.clientHeight],
      buttons: Object.fromEntries(
        ["vary", "full", "apply"].map((id) => [id, { text: $(id).textContent, disabled: $(id).disabled }]),
      ),
    };
  });
}

async function main() {
  const userDataDir = await mkdtemp(path.join(tmpdir(), "flux-viewer-chromium-"));
  const server = await serve(await bundle(), options.mcpUrl);
  const origin = `http://127.0.0.1:${server.address().port}`;
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: options.chromium,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
    viewport: { width: WIDTH + 32, height: 1000 },
  });
  const requests = [];
  const consoleErrors = [];
  context.on("request", (request) => requests.push(request.url()));
  let current = null;
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    page.on("console", (message) => {
      if (message.type() === "error") consoleErrors.push(message.text());
    });
    page.on("pageerror", (error) => consoleErrors.push(String(error)));
    step("host page");
    await page.goto(`${origin}/`);
    await page.waitForFunction(() => window.fluxHost !== undefined, null, { timeout: STEP_TIMEOUT });
    step(`start: connect, list tools, read the view, call ${options.tool ?? "generate_image"}`);
    const started = await page.evaluate(
      (args) => window.fluxHost.start(args),
      {
        mcpPath: "/mcp",
        tool: options.tool ?? "generate_image",
        args: options.args ?? { prompt: options.prompt },
        width: WIDTH,
      },
    );
    const frame = page.locator("iframe#view");
    const view = page.frameLocator("iframe#view");
    current = view;
    let pending = null;
    if (options.pending) {
      // The generation outlasted the server's wait budget: the view says so and offers to wait.
      const again = view.locator("#pending:not([hidden]) button");
      await again.waitFor({ timeout: STEP_TIMEOUT });
      pending = await view.locator("#pending").textContent();
      const image = view.locator("#image[src^='data:image/']");
      for (let round = 0; round < 20 && !(await image.isVisible()); round++) {
        // One look, no waiting: the image may arrive (and the button hide) at any moment.
        const ready = await again.evaluateAll((buttons) => buttons.some((b) => !b.disabled));
        if (ready) {
          step("pending: check again");
          await again.click({ timeout: 2000 }).catch(() => {});
        }
        await page.waitForTimeout(250);
      }
    }
    await view.locator("#image[src^='data:image/']").waitFor({ timeout: STEP_TIMEOUT });
    await page.waitForFunction(
      () => document.querySelector("iframe#view").getBoundingClientRect().height > 300,
      null,
      { timeout: STEP_TIMEOUT },
    );
    step("first image shown");
    const first = await facts(view);
    const firstShot = path.join(options.outDir, "viewer-first.png");
    await frame.screenshot({ path: firstShot });
    const imageBox = await view.locator("#image").boundingBox();
    const frameBox = await frame.boundingBox();
    if (options.firstOnly) {
      const log = await page.evaluate(() => window.fluxHost.log);
      process.stdout.write(JSON.stringify({ started, pending, first, log, origin, requests, consoleErrors }) + "\n");
      return;
    }

    // Vary: same prompt, new seed, a second image.
    step("vary");
    await view.locator("#vary").click();
    await view.locator("#strip li:nth-child(2)").waitFor({ timeout: STEP_TIMEOUT });
    await view.locator("#vary:not([disabled])").waitFor({ timeout: STEP_TIMEOUT });
    const varied = await facts(view);
    const variedShot = path.join(options.outDir, "viewer-varied.png");
    await frame.screenshot({ path: variedShot });
    const variedImageBox = await view.locator("#image").boundingBox();

    // Edit with an instruction: a third image, made from the second.
    step("edit");
    await view.locator("#instruction").fill(options.instruction);
    await view.locator("#apply").click();
    await view.locator("#strip li:nth-child(3)").waitFor({ timeout: STEP_TIMEOUT });
    await view.locator("#vary:not([disabled])").waitFor({ timeout: STEP_TIMEOUT });
    const edited = await facts(view);

    // Full size: the saved file, read through the host (resources/read).
    step("full size");
    await view.locator("#full").click();
    await view.locator("#lightbox:not([hidden]) #fullimage[src^='data:image/']").waitFor({
      timeout: STEP_TIMEOUT,
    });
    const full = await view.locator("#fullimage").evaluate((img) => [img.naturalWidth, img.naturalHeight]);
    await view.locator("#close").click();

    step("done");
    const log = await page.evaluate(() => window.fluxHost.log);
    const relative = (box) =>
      box && frameBox ? { x: box.x - frameBox.x, y: box.y - frameBox.y, width: box.width, height: box.height } : null;
    process.stdout.write(
      JSON.stringify({
        started,
        first,
        varied,
        edited,
        full,
        screenshots: { first: firstShot, varied: variedShot },
        imageBox: relative(imageBox),
        variedImageBox: relative(variedImageBox),
        log,
        origin,
        requests,
        consoleErrors,
      }) + "\n",
    );
  } catch (error) {
    if (current) {
      const state = await facts(current).catch(() => null);
      process.stderr.write(`viewer state: ${JSON.stringify(state)}\n`);
      process.stderr.write(`browser console errors: ${JSON.stringify(consoleErrors)}\n`);
    }
    throw error;
  } finally {
    await context.close();
    server.closeAllConnections(); // the proxied event streams stay open otherwise
    server.close();
    await rm(userDataDir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`${error.stack ?? error}\n`);
    process.exit(1);
  },
);

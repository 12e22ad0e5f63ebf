// The FLUX image viewer, an MCP App (io.modelcontextprotocol/ui). It speaks the Apps protocol
// (JSON-RPC 2.0 over postMessage with the host) directly: ui/initialize, the tool-input and
// tool-result notifications, and tools/call + resources/read, which the host forwards to this
// server. It loads nothing from the network: every image is a data: URI made from a result's
// image block or from a resources/read answer. Every string from a result goes in as text.
(function () {
  "use strict";

  var CONFIG = JSON.parse(document.getElementById("flux-config").textContent);
  var PROTOCOL_VERSION = "2026-01-26";
  var IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp", "image/gif"];
  var META_KEY = CONFIG.metaKey;

  var $ = function (id) { return document.getElementById(id); };
  var state = {
    host: {},        // hostCapabilities from ui/initialize
    args: null,      // arguments of the call that opened this view (ui/notifications/tool-input)
    tool: null,      // the name of that tool, when the host says (hostContext.toolInfo)
    entries: [],     // one per image shown: {src, uri, file, result, args, tool}
    origins: {},     // prediction id -> the call that made it {args, tool}, for get_prediction
    selected: -1,
    busy: false
  };

  // -- JSON-RPC over postMessage ------------------------------------------------------------
  var nextId = 1;
  var pending = {};

  function post(message) { window.parent.postMessage(message, "*"); }

  function request(method, params) {
    var id = nextId++;
    return new Promise(function (resolve, reject) {
      pending[id] = { resolve: resolve, reject: reject };
      post({ jsonrpc: "2.0", id: id, method: method, params: params || {} });
    });
  }

  function notify(method, params) { post({ jsonrpc: "2.0", method: method, params: params || {} }); }

  function reply(id, result) { post({ jsonrpc: "2.0", id: id, result: result }); }

  window.addEventListener("message", function (event) {
    if (event.source !== window.parent) return;
    var message = event.data;
    if (!message || message.jsonrpc !== "2.0") return;
    if (message.method === undefined && message.id !== undefined) {
      var waiter = pending[message.id];
      if (!waiter) return;
      delete pending[message.id];
      if (message.error) waiter.reject(new Error(message.error.message || "request failed"));
      else waiter.resolve(message.result);
      return;
    }
    handle(message);
  });

  function handle(message) {
    var params = message.params || {};
    switch (message.method) {
      case "ui/notifications/tool-input":
        state.args = params.arguments || {};
        showPrompt();
        break;
      case "ui/notifications/tool-result":
        show(params, state.args, state.tool, false);
        break;
      case "ui/notifications/tool-cancelled":
        setState("Canceled", false);
        break;
      case "ui/notifications/host-context-changed":
        applyContext(params);
        break;
      case "ui/resource-teardown":
      case "ping":
        reply(message.id, {});
        break;
      default:
        if (message.id !== undefined) {
          post({ jsonrpc: "2.0", id: message.id, error: { code: -32601, message: "Method not found" } });
        }
    }
  }

  // -- host context: theme, style variables, size ---------------------------------------------
  function applyContext(context) {
    if (!context) return;
    if (context.theme) document.documentElement.classList.toggle("dark", context.theme === "dark");
    var variables = context.styles && context.styles.variables;
    if (variables) {
      Object.keys(variables).forEach(function (name) {
        if (name.indexOf("--") === 0 && typeof variables[name] === "string") {
          document.documentElement.style.setProperty(name, variables[name]);
        }
      });
    }
    var box = context.containerDimensions;
    var limit = box && (box.maxHeight || box.height);
    if (typeof limit === "number" && limit > 200) {
      // Room for the facts and the buttons below the image, within the host's frame.
      var room = Math.min(Math.round(limit - 220), 640);
      document.documentElement.style.setProperty("--max-image-height", room + "px");
    }
    if (context.toolInfo && context.toolInfo.tool && context.toolInfo.tool.name) {
      state.tool = context.toolInfo.tool.name;
    }
  }

  var lastSize = "";
  function reportSize() {
    var root = document.documentElement;
    var before = root.style.height;
    root.style.height = "max-content";
    var height = Math.ceil(root.getBoundingClientRect().height);
    root.style.height = before;
    var width = Math.ceil(window.innerWidth);
    var size = width + "x" + height;
    if (size !== lastSize) {
      lastSize = size;
      notify("ui/notifications/size-changed", { width: width, height: height });
    }
  }

  // -- results ---------------------------------------------------------------------------------
  function textOf(result) {
    return (result.content || [])
      .filter(function (block) { return block && block.type === "text"; })
      .map(function (block) { return String(block.text); })
      .join("\n");
  }

  function dataUri(mimeType, base64) {
    if (IMAGE_TYPES.indexOf(mimeType) < 0 || typeof base64 !== "string") return null;
    if (!/^[A-Za-z0-9+/=\s]*$/.test(base64)) return null;
    return "data:" + mimeType + ";base64," + base64.replace(/\s+/g, "");
  }

  function readImage(uri) {
    if (!state.host.serverResources) return Promise.resolve(null);
    return request("resources/read", { uri: uri }).then(function (answer) {
      var item = (answer && answer.contents || [])[0];
      return item ? dataUri(item.mimeType, item.blob) : null;
    }, function () { return null; });
  }

  // A result of generate_image, edit_image or get_prediction: add its images and show the first.
  function show(result, args, tool, fromViewer) {
    setError(null);
    if (!result || result.isError) {
      setError(result ? textOf(result) || "The call failed." : "No result.");
      setState("", false);
      return Promise.resolve([]);
    }
    var data = result.structuredContent || {};
    var extra = (result._meta && result._meta[META_KEY]) || {};
    if (tool === CONFIG.getTool) {  // its arguments name a prediction: take the call that made it
      var origin = state.origins[data.prediction_id] || {};
      args = origin.args || null;
      tool = origin.tool || null;
    }
    if (!tool && args) {  // a host that does not say which tool: its arguments tell
      tool = args[CONFIG.editField] !== undefined ? CONFIG.editTool : CONFIG.generateTool;
    }
    if (data.prediction_id && args) state.origins[data.prediction_id] = { args: args, tool: tool };
    $("model").textContent = data.model || "";
    if (data.status && data.status !== "succeeded") {
      showPending(data, textOf(result));
      return Promise.resolve([]);
    }
    $("pending").hidden = true;
    var previews = (result.content || []).filter(function (block) {
      return block && block.type === "image";
    });
    var uris = Array.isArray(data.resource_uris) ? data.resource_uris : [];
    var files = Array.isArray(data.files) ? data.files : [];
    var links = Array.isArray(data.links) ? data.links : [];
    var count = Math.max(uris.length, previews.length);
    var loads = [];
    for (var i = 0; i < count; i++) {
      var preview = previews[i] ? dataUri(previews[i].mimeType, previews[i].data) : null;
      loads.push(preview ? Promise.resolve(preview) : uris[i] ? readImage(uris[i]) : null);
    }
    return Promise.all(loads).then(function (sources) {
      var added = [];
      sources.forEach(function (src, index) {
        var known = find(data.prediction_id, index);
        if (known >= 0) {  // the same image again (get_prediction of a shown result)
          added.push(state.entries[known]);
          return;
        }
        var entry = {
          src: src,
          uri: uris[index] || null,
          file: files[index] || null,
          link: /^https?:\/\//.test(links[index] || "") ? links[index] : null,
          index: index,
          data: data,
          prompt: (args && typeof args.prompt === "string") ? args.prompt : extra.prompt || null,
          edited: extra.edited === true || tool === CONFIG.editTool,
          args: args,
          tool: tool
        };
        state.entries.push(entry);
        added.push(entry);
      });
      if (added.length) select(state.entries.indexOf(added[0]));
      setState(fromViewer ? "New image" : "", false);
      return added;
    });
  }

  function find(predictionId, index) {
    for (var i = 0; i < state.entries.length; i++) {
      var entry = state.entries[i];
      if (entry.data.prediction_id === predictionId && entry.index === index) return i;
    }
    return -1;
  }

  function showPending(data, text) {
    var box = $("pending");
    box.hidden = false;
    box.textContent = "";
    box.appendChild(document.createTextNode(text || ("Still " + data.status + ".")));
    if (data.prediction_id) {
      var again = document.createElement("button");
      again.type = "button";
      again.textContent = "Check again";
      again.style.marginLeft = "8px";
      again.addEventListener("click", function () {
        again.disabled = true;
        call(CONFIG.getTool, { prediction_id: data.prediction_id }, "Waiting for the image…");
      });
      box.appendChild(again);
    }
    $("actions").hidden = state.entries.length === 0;
    setState("", false);
  }

  function select(index) {
    var entry = state.entries[index];
    if (!entry) return;
    state.selected = index;
    var data = entry.data;
    $("empty").hidden = true;
    $("stage").hidden = false;
    $("facts").hidden = false;
    $("actions").hidden = false;
    var image = $("image");
    if (entry.src) {
      image.src = entry.src;
      image.hidden = false;
    } else {
      image.removeAttribute("src");
      image.hidden = true;
    }
    image.alt = entry.prompt || "Generated image";
    $("prompt").textContent = entry.prompt || "";
    $("seed").textContent = data.seed === null || data.seed === undefined ? "—" : String(data.seed);
    $("timings").textContent = timings(data.timings || {});
    $("path").textContent = entry.file || "—";
    $("model").textContent = data.model || "";
    renderStrip();
    updateButtons();
  }

  function timings(t) {
    var parts = [];
    var add = function (label, value) {
      if (typeof value === "number") parts.push(label + " " + value.toFixed(1) + " s");
    };
    add("queued", t.queued);
    add("ran", t.predicted);
    add("total", t.total);
    return parts.join(" · ") || "—";
  }

  function renderStrip() {
    var strip = $("strip");
    strip.textContent = "";
    strip.hidden = state.entries.length < 2;
    state.entries.forEach(function (entry, index) {
      var item = document.createElement("li");
      var button = document.createElement("button");
      button.type = "button";
      button.title = (entry.prompt || "") + (entry.data.seed !== undefined ? " (seed " + entry.data.seed + ")" : "");
      button.setAttribute("aria-current", index === state.selected ? "true" : "false");
      if (entry.src) {
        var thumb = document.createElement("img");
        thumb.src = entry.src;
        thumb.alt = "Image " + (index + 1);
        button.appendChild(thumb);
      } else {
        button.textContent = String(index + 1);
      }
      button.addEventListener("click", function () { select(index); });
      item.appendChild(button);
      strip.appendChild(item);
    });
  }

  // -- actions: tools called through the host ------------------------------------------------
  function current() { return state.entries[state.selected] || null; }

  function varyCall(entry) {
    if (entry.args && entry.tool) {
      var args = {};
      Object.keys(entry.args).forEach(function (key) {
        if (key !== "seed") args[key] = entry.args[key];
      });
      return { tool: entry.tool, args: args };
    }
    if (entry.prompt && !entry.edited) return { tool: CONFIG.generateTool, args: { prompt: entry.prompt } };
    return null;
  }

  function updateButtons() {
    var entry = current();
    $("vary").disabled = state.busy || !entry || !state.host.serverTools || !varyCall(entry);
    $("apply").disabled = state.busy || !entry || !state.host.serverTools;
    $("instruction").disabled = state.busy || !entry;
    $("full").disabled = state.busy || !entry || !(entry.uri || entry.file);
  }

  function setState(text, busy) {
    state.busy = busy;
    var element = $("state");
    element.textContent = text;
    element.classList.toggle("busy", busy);
    updateButtons();
  }

  function setError(text) {
    $("error").hidden = !text;
    $("error").textContent = text || "";
  }

  function call(tool, args, label) {
    setState(label, true);
    setError(null);
    return request("tools/call", { name: tool, arguments: args }).then(function (result) {
      return show(result, args, tool, true).then(function (added) {
        if (added.length) tellModel(tool, result);
      });
    }, function (error) {
      setError("The call to " + tool + " failed: " + error.message);
      setState("", false);
    });
  }

  // The model did not see what happened in the viewer: tell it, for its next turn.
  function tellModel(tool, result) {
    if (!state.host.updateModelContext) return;
    var text = "In the image viewer, the user ran " + tool + ". Its result:\n" + textOf(result);
    request("ui/update-model-context", { content: [{ type: "text", text: text }] }).catch(function () {});
  }

  $("vary").addEventListener("click", function () {
    var entry = current();
    var plan = entry && varyCall(entry);
    if (plan) call(plan.tool, plan.args, "Making a variation…");
  });

  // No <form>: hosts sandbox the view without allow-forms, where a submit never fires.
  function applyEdit() {
    var entry = current();
    var instruction = $("instruction").value.trim();
    if (!entry || !instruction) { $("instruction").focus(); return; }
    var args = { prompt: instruction };
    // One image: its prediction id; one of several: its saved path (the id picks the first).
    var many = entry.data.files && entry.data.files.length > 1;
    args[CONFIG.editField] = many && entry.file ? entry.file : entry.data.prediction_id;
    call(CONFIG.editTool, args, "Editing…").then(function () { $("instruction").value = ""; });
  }

  $("apply").addEventListener("click", applyEdit);
  $("instruction").addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !state.busy) applyEdit();
  });

  function openFull() {
    var entry = current();
    if (!entry) return;
    var open = function (src) {
      $("fullimage").src = src;
      $("lightbox").hidden = false;
    };
    if (entry.uri && state.host.serverResources) {
      setState("Loading the full-size image…", true);
      readImage(entry.uri).then(function (src) {
        setState("", false);
        if (src) open(src); else openFile(entry);
      });
    } else {
      openFile(entry);
    }
  }

  function openFile(entry) {
    if (entry.link && state.host.openLinks) {  // kept in object storage: its presigned link
      request("ui/open-link", { url: entry.link }).catch(function () {});
    } else if (entry.file && /^[\/\\]|^[A-Za-z]:/.test(entry.file) && state.host.openLinks) {
      var url = "file://" + encodeURI(entry.file.replace(/\\/g, "/")).replace(/#/g, "%23");
      request("ui/open-link", { url: url }).catch(function () {});
    } else if (entry.src) {
      $("fullimage").src = entry.src;
      $("lightbox").hidden = false;
    }
  }

  $("full").addEventListener("click", openFull);
  $("image").addEventListener("click", openFull);
  $("close").addEventListener("click", function () { $("lightbox").hidden = true; });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") $("lightbox").hidden = true;
  });

  function showPrompt() {
    if (state.entries.length === 0 && state.args && typeof state.args.prompt === "string") {
      $("empty").textContent = "Working on: " + state.args.prompt;
    }
  }

  // -- start -----------------------------------------------------------------------------------
  request("ui/initialize", {
    appInfo: { name: "flux-image-viewer", version: CONFIG.version },
    appCapabilities: { availableDisplayModes: ["inline"] },
    protocolVersion: PROTOCOL_VERSION
  }).then(function (answer) {
    state.host = (answer && answer.hostCapabilities) || {};
    applyContext(answer && answer.hostContext);
    notify("ui/notifications/initialized", {});
    updateButtons();
    // Sizes only once initialized: the host sizes its frame to the content from then on.
    reportSize();
    new ResizeObserver(function () { window.requestAnimationFrame(reportSize); })
      .observe(document.body);
  }, function (error) {
    setError("This host did not start the viewer: " + error.message);
  });
})();

// templatecheck's driver for @huggingface/jinja: one JSON request per line on stdin, one JSON answer per line
// on stdout. Started by templatecheck.engines with an empty environment and a bounded heap:
//   node --max-old-space-size=MB hfjs_driver.mjs NODE_DIR
// A request is {"source", "contexts", "clock" (ISO date, or null), "max_chars"}: one answer line per context,
// in order, each {"ok": text} or {"error": kind, "message": text}, kind one of syntax, refused, raised, output;
// after an output error the batch stops (the caller answers the rest with it).
import { createInterface } from "node:readline";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const dir = process.argv[2];
const entry = join(dir, "node_modules", "@huggingface", "jinja", "dist", "index.js");
const { Environment, Template } = await import(pathToFileURL(entry).href);

// The two globals a render gets from the caller, as transformers gives them: a refusal the answer can tell
// from any other error, and the run's pinned clock. @huggingface/jinja declares both itself; a value the
// caller passes replaces the built-in one.
const OVERRIDES = new Set(["raise_exception", "strftime_now"]);
const declare = Environment.prototype.set;
Environment.prototype.set = function (name, value) {
  if (OVERRIDES.has(name) && this.variables.has(name)) this.variables.delete(name);
  return declare.call(this, name, value);
};

const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
  "October", "November", "December"];

function strftime(date, format) {
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  const hour12 = date.getUTCHours() % 12 || 12;
  const table = {
    Y: () => String(date.getUTCFullYear()), y: () => pad(date.getUTCFullYear() % 100),
    m: () => pad(date.getUTCMonth() + 1), d: () => pad(date.getUTCDate()), e: () => String(date.getUTCDate()).padStart(2, " "),
    H: () => pad(date.getUTCHours()), I: () => pad(hour12), M: () => pad(date.getUTCMinutes()),
    S: () => pad(date.getUTCSeconds()), p: () => (date.getUTCHours() < 12 ? "AM" : "PM"),
    B: () => MONTHS[date.getUTCMonth()], b: () => MONTHS[date.getUTCMonth()].slice(0, 3),
    A: () => DAYS[date.getUTCDay()], a: () => DAYS[date.getUTCDay()].slice(0, 3), "%": () => "%",
  };
  return format.replace(/%([a-zA-Z%])/g, (all, key) => (table[key] ? table[key]() : all));
}

class Refusal extends Error {}

// The parsed templates of this run (a check renders one template many times), the oldest dropped first.
const parsed = new Map();

function compiled(source) {
  if (!parsed.has(source)) {
    if (parsed.size >= 64) parsed.delete(parsed.keys().next().value);
    parsed.set(source, new Template(source));
  }
  return parsed.get(source);
}

function answer(request, given) {
  let template;
  try {
    template = compiled(request.source);
  } catch (error) {
    return { error: "syntax", message: String(error && error.message) };
  }
  const context = { ...given };
  context.raise_exception = (message) => { throw new Refusal(String(message)); };
  if (request.clock !== null) {
    const clock = new Date(request.clock + "Z");
    context.strftime_now = (format) => strftime(clock, String(format));
  }
  try {
    const text = template.render(context);
    if (request.max_chars !== null && text.length > request.max_chars) {
      return { error: "output", message: `output exceeded ${request.max_chars} characters` };
    }
    return { ok: text };
  } catch (error) {
    const kind = error instanceof Refusal ? "refused" : "raised";
    return { error: kind, message: String(error && error.message) };
  }
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
process.stdout.write(JSON.stringify({ ready: true }) + "\n");
for await (const line of lines) {
  let request;
  try {
    request = JSON.parse(line);
  } catch (error) {
    process.stdout.write(JSON.stringify({ error: "crash", message: String(error && error.message) }) + "\n");
    continue;
  }
  for (const context of request.contexts) {
    let reply;
    try {
      reply = answer(request, context);
    } catch (error) {
      reply = { error: "crash", message: String(error && error.message) };
    }
    process.stdout.write(JSON.stringify(reply) + "\n");
    if (reply.error === "output") break;
  }
}

// Drives a Beacon agent with the npm `consul` package (v2) and prints what it got back as one JSON
// object; tests/integration/test_npm_consul.py asserts on it. The package has query, health, catalog
// and event APIs but no config-entry or discovery-chain API, so those go through the client's own
// request layer (`_get`/`_put`/`_delete`, the methods its APIs are built on).
"use strict";

const Consul = require("consul");
const utils = require("consul/lib/utils");
const { EventEmitter } = require("events");

// The client returns [response, body] (headers included) when the request's ctx, an EventEmitter,
// has includeResponse set; one per request, as the client marks it finished.
function withResponse() {
  const ctx = new EventEmitter();
  ctx.includeResponse = true;
  return ctx;
}

async function main() {
  const port = Number(process.argv[2]);
  const consul = new Consul({ host: "127.0.0.1", port });
  const out = {};

  // Prepared queries: create, get, list, update, execute, explain, destroy.
  const created = await consul.query.create({
    name: "npm-redis",
    service: { service: "redis", tags: ["primary"], onlypassing: true, failover: { nearestn: 2, datacenters: ["dc2"] } },
    dns: { ttl: "11s" },
  });
  out.created = created;
  out.get = await consul.query.get(created.ID);
  out.list = await consul.query.list();
  await consul.query.update({
    query: created.ID,
    name: "npm-redis",
    near: "_agent",
    service: { service: "redis", onlypassing: false },
    dns: { ttl: "12s" },
  });
  out.afterUpdate = await consul.query.get(created.ID);
  const [execRes, executed] = await consul.query.execute({ query: "npm-redis", ctx: withResponse() });
  out.execute = executed;
  out.executeIndex = execRes.headers["x-consul-index"];
  out.executeByID = await consul.query.execute(created.ID);
  const tmpl = await consul.query.create({
    name: "npm-geo-",
    template: { type: "name_prefix_match", regexp: "^npm-geo-(.*)$" },
    service: { service: "${match(1)}" },
  });
  out.template = tmpl;
  // Consul answers explain with an object ({"Query": ...}); the package's explain expects an array
  // and so resolves to undefined against Consul too. Read the body it received instead.
  const [explainRes] = await consul.query.explain({ query: "npm-geo-redis", ctx: withResponse() });
  out.explain = explainRes.body;
  out.templateExecute = await consul.query.execute("npm-geo-redis");
  await consul.query.destroy(tmpl.ID);
  try {
    await consul.query.get(tmpl.ID);
    out.getDeleted = "found";
  } catch (err) {
    out.getDeleted = err.response ? err.response.statusCode : String(err.message);
  }
  try {
    await consul.query.execute({ query: "npm-none", ctx: withResponse() });
    out.executeMissing = "found";
  } catch (err) {
    out.executeMissing = err.response.statusCode;
  }

  // Config entries and the discovery chain through the client's request layer.
  out.configPut = await consul._put(
    { name: "config.set", path: "/config", type: "json", body: { Kind: "service-defaults", Name: "npm-web", Protocol: "http" } },
    utils.body);
  out.configGet = await consul._get({ name: "config.get", path: "/config/{kind}/{name}", params: { kind: "service-defaults", name: "npm-web" } }, utils.body);
  // A `false` body resolves to undefined through the client's callbacks; read the response itself.
  const [casRes] = await consul._put(
    { name: "config.set", path: "/config", query: { cas: "1" }, type: "json", body: { Kind: "service-defaults", Name: "npm-web", Protocol: "grpc" }, ctx: withResponse() },
    utils.body);
  out.configCas = casRes.body;
  out.configList = await consul._get({ name: "config.list", path: "/config/{kind}", params: { kind: "service-defaults" } }, utils.body);
  out.chain = await consul._get({ name: "discovery-chain", path: "/discovery-chain/{service}", params: { service: "npm-web" } }, utils.body);
  try {
    await consul._put({ name: "config.set", path: "/config", type: "json", body: { Kind: "nonsense", Name: "x" }, ctx: withResponse() }, utils.body);
    out.configBadKind = "accepted";
  } catch (err) {
    out.configBadKind = [err.response.statusCode, String(err.message)];
  }
  out.configDelete = await consul._delete({ name: "config.delete", path: "/config/{kind}/{name}", params: { kind: "service-defaults", name: "npm-web" } }, utils.body);

  // Events filtered by name, health with ?peer, and ?cached via the query string.
  await consul.event.fire("npm-deploy", "1");
  await consul.event.fire("npm-other", "2");
  out.events = (await consul.event.list("npm-deploy")).map((e) => e.Name);
  out.peer = await consul._get({ name: "health.service", path: "/health/service/{service}", params: { service: "redis" }, query: { peer: "elsewhere" } }, utils.body);
  const cachedReq = () => consul._get({ name: "health.service", path: "/health/service/{service}", params: { service: "redis" }, query: { cached: "" }, ctx: withResponse() }, utils.body);
  const [first] = await cachedReq();
  const [second] = await cachedReq();
  out.cached = [first.headers["x-cache"], second.headers["x-cache"], second.headers["age"]];
  process.stdout.write(JSON.stringify(out));
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
  process.exit(1);
});

// Shared parts of the client matrix's Node.js programs
// (internal/clientmatrix): the contract's environment (see
// harness_test.go), checks, the iteration loop and the RESULT line. A
// mismatch throws; the program then exits with status 1.
'use strict';

const crypto = require('crypto');

class Mismatch extends Error {}

function short(v) {
  const s = typeof v === 'string' ? JSON.stringify(v) : require('util').inspect(v);
  if (s.length > 200) {
    return `${s.slice(0, 120)}… (${s.length} characters, md5 ${crypto.createHash('md5').update(s).digest('hex')})`;
  }
  return s;
}

function expect(ok, what) {
  if (!ok) throw new Mismatch(what);
}

function equal(got, want, what) {
  const same = Buffer.isBuffer(got) && Buffer.isBuffer(want) ? got.equals(want) : JSON.stringify(got) === JSON.stringify(want);
  if (!same) throw new Mismatch(`${what}: got ${short(got)}, want ${short(want)}`);
}

function config() {
  const env = process.env;
  return {
    host: env.CM_HOST,
    port: Number(env.CM_PORT),
    user: env.CM_USER,
    password: env.CM_PASSWORD,
    database: env.CM_DATABASE,
    backendUsers: env.CM_BACKEND_USERS.split(','),
    seconds: Number(env.CM_SECONDS || '0'),
    minIterations: Number(env.CM_MIN_ITERATIONS || '2'),
    minChanges: Number(env.CM_MIN_USER_CHANGES || '0'),
    maxSeconds: Number(env.CM_MAX_SECONDS || '60'),
    pauseMs: Number(env.CM_PAUSE_MS || '0'),
  };
}

// Users records the backend users the long-lived connection ran as, in order.
class Users {
  constructor(cfg) {
    this.cfg = cfg;
    this.seen = [];
  }

  observe(user) {
    expect(this.cfg.backendUsers.includes(user), `current_user ${user} is not one of the backend users`);
    if (this.seen.length === 0 || this.seen[this.seen.length - 1] !== user) this.seen.push(user);
  }
}

// run calls iteration(i, users) until the work is done (CM_SECONDS passed,
// CM_MIN_ITERATIONS ran and current_user changed CM_MIN_USER_CHANGES times,
// or CM_MAX_SECONDS passed), then checks that current_user changed often
// enough and prints the RESULT line.
async function run(name, cfg, iteration) {
  const users = new Users(cfg);
  const start = Date.now();
  let i = 0;
  for (;;) {
    i++;
    await iteration(i, users);
    const elapsed = (Date.now() - start) / 1000;
    if ((i >= cfg.minIterations && elapsed >= cfg.seconds && users.seen.length - 1 >= cfg.minChanges) || elapsed >= cfg.maxSeconds) break;
    await new Promise((resolve) => setTimeout(resolve, cfg.pauseMs));
  }
  const changes = users.seen.length - 1;
  expect(changes >= cfg.minChanges, `current_user changed ${changes} times (${users.seen.join(' -> ')}), want at least ${cfg.minChanges}`);
  console.log(`RESULT client=${name} iterations=${i} users=${users.seen.join(',')}`);
}

// bigText is a text of about 1.5 MiB (UTF-8) with multi-byte characters, different for each i.
function bigText(i) {
  const unit = `${String(i).padStart(6, '0')} credswap client matrix: é ß € ✓ 😀 `;
  return unit.repeat(Math.floor(1572864 / Buffer.byteLength(unit)) + 1);
}

// bigBytes is 1.5 MiB of every byte value, rotated by i.
function bigBytes(i) {
  const b = Buffer.alloc(1572864);
  for (let k = 0; k < b.length; k++) b[k] = (k + i) % 256;
  return b;
}

// fails runs promise, which must reject with an error for which check is true.
async function fails(promise, check, what) {
  try {
    await promise;
  } catch (err) {
    expect(check(err), `${what} failed differently: ${err.code || ''} ${err.errno || ''} ${err.message}`);
    return;
  }
  throw new Mismatch(`${what} did not fail`);
}

function main(fn) {
  fn().catch((err) => {
    console.error(err instanceof Mismatch ? `MISMATCH: ${err.message}` : err);
    process.exit(1);
  });
}

module.exports = { Mismatch, expect, equal, config, run, bigText, bigBytes, fails, main };

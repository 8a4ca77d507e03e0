#!/usr/bin/env node
// Runs an ONNX model in ONNX Runtime on inputs read from .npy files and writes each
// output as <out_dir>/<output name>.npy, so that tests and benchmarks compare a runtime's
// results with qopt's own.
//
//   node run_onnx.js MODEL.onnx OUT_DIR INPUT.npy... [--threads N] [--repeat N] [--no-optimize]
//                   [--save-optimized PATH] [--profile PATH_PREFIX]
//
// Inputs go to the model's inputs in order. --repeat N runs the model N more times after
// the first run and prints {"ms": [...]} (wall time per run) on stdout. --save-optimized
// PATH writes the graph ONNX Runtime runs after its graph optimizations (fused int8
// kernels, folded Q/DQ pairs) to PATH, so a benchmark can say which kernels ran.
// --profile PATH_PREFIX turns on ONNX Runtime's profiler for every run of the session and
// writes its trace (Chrome trace JSON: one event per node and run, with the op type and
// duration) to PATH_PREFIX_<date>.json; the file's path is printed on stderr as
// "profile: PATH". Prints ONNX Runtime's version on stderr.
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

const DTYPES = {
  '<f4': ['float32', Float32Array],
  '<f8': ['float64', Float64Array],
  '<i8': ['int64', BigInt64Array],
  '<i4': ['int32', Int32Array],
  '|i1': ['int8', Int8Array],
  '|u1': ['uint8', Uint8Array],
};

function readNpy(file) {
  const buf = fs.readFileSync(file);
  if (buf.length < 10 || buf.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error(`${file}: not a .npy file`);
  const major = buf[6];
  const headerLength = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = buf.toString('latin1', start, start + headerLength);
  const descr = /'descr':\s*'([^']+)'/.exec(header);
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header);
  if (!descr || !shape || /'fortran_order':\s*True/.test(header)) throw new Error(`${file}: unsupported .npy header ${header}`);
  const type = DTYPES[descr[1]];
  if (!type) throw new Error(`${file}: unsupported dtype ${descr[1]}`);
  const dims = shape[1].split(',').map((s) => s.trim()).filter((s) => s.length > 0).map(Number);
  const offset = start + headerLength;
  const count = dims.reduce((a, b) => a * b, 1);
  const bytes = buf.subarray(offset, offset + count * type[1].BYTES_PER_ELEMENT);
  const data = new type[1](bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
  if (data.length !== count) throw new Error(`${file}: holds ${data.length} values, its shape says ${count}`);
  return new ort.Tensor(type[0], data, dims);
}

function writeNpy(file, tensor) {
  const descr = Object.keys(DTYPES).find((k) => DTYPES[k][0] === tensor.type);
  if (!descr) throw new Error(`output of type ${tensor.type} cannot be written`);
  const dims = tensor.dims.length === 1 ? `${tensor.dims[0]},` : tensor.dims.join(', ');
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${dims}), }`;
  header += ' '.repeat((64 - ((10 + header.length + 1) % 64)) % 64) + '\n';
  const prefix = Buffer.alloc(10);
  prefix.write('\x93NUMPY', 0, 'latin1');
  prefix[6] = 1;
  prefix[7] = 0;
  prefix.writeUInt16LE(header.length, 8);
  const data = Buffer.from(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength);
  fs.writeFileSync(file, Buffer.concat([prefix, Buffer.from(header, 'latin1'), data]));
}

// Ends profiling and returns the trace's path. The Node binding does not return the name
// ONNX Runtime chose (PATH_PREFIX_<date>.json), so it is the newest such file.
function endProfiling(session, prefix) {
  session.endProfiling();
  const dir = path.dirname(path.resolve(prefix));
  const base = path.basename(prefix);
  const written = fs.readdirSync(dir)
    .filter((f) => f.startsWith(`${base}_`) && f.endsWith('.json'))
    .map((f) => path.join(dir, f))
    .sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs);
  if (written.length === 0) throw new Error(`no profile ${prefix}_*.json was written`);
  return written[0];
}

async function main() {
  const args = process.argv.slice(2);
  const options = { threads: 0, repeat: 0, optimize: true, saveOptimized: null, profile: null };
  const positional = [];
  for (let i = 0; i < args.length; ++i) {
    if (args[i] === '--threads') options.threads = Number(args[++i]);
    else if (args[i] === '--repeat') options.repeat = Number(args[++i]);
    else if (args[i] === '--no-optimize') options.optimize = false;
    else if (args[i] === '--save-optimized') options.saveOptimized = args[++i];
    else if (args[i] === '--profile') options.profile = args[++i];
    else positional.push(args[i]);
  }
  if (positional.length < 3) {
    console.error('usage: run_onnx.js MODEL.onnx OUT_DIR INPUT.npy... [--threads N] [--repeat N] [--no-optimize] '
      + '[--save-optimized PATH] [--profile PATH_PREFIX]');
    process.exit(2);
  }
  const [model, outDir, ...inputFiles] = positional;
  const sessionOptions = { graphOptimizationLevel: options.optimize ? 'all' : 'disabled' };
  if (options.threads > 0) {
    sessionOptions.intraOpNumThreads = options.threads;
    sessionOptions.interOpNumThreads = 1;
  }
  if (options.saveOptimized) sessionOptions.optimizedModelFilePath = options.saveOptimized;
  if (options.profile) {
    sessionOptions.enableProfiling = true;
    sessionOptions.profileFilePrefix = options.profile;
  }
  const session = await ort.InferenceSession.create(model, sessionOptions);
  if (inputFiles.length !== session.inputNames.length) {
    throw new Error(`the model has ${session.inputNames.length} inputs (${session.inputNames.join(', ')}), got ${inputFiles.length} files`);
  }
  const feeds = {};
  session.inputNames.forEach((name, i) => { feeds[name] = readNpy(inputFiles[i]); });
  const results = await session.run(feeds);
  fs.mkdirSync(outDir, { recursive: true });
  for (const name of session.outputNames) writeNpy(path.join(outDir, `${name.replace(/[^A-Za-z0-9_.-]/g, '_')}.npy`), results[name]);
  if (options.repeat > 0) {
    const ms = [];
    for (let r = 0; r < options.repeat; ++r) {
      const t0 = process.hrtime.bigint();
      await session.run(feeds);
      ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    console.log(JSON.stringify({ ms }));
  }
  if (options.profile) console.error(`profile: ${endProfiling(session, options.profile)}`);
  console.error(`onnxruntime ${ort.env.versions.common}: ${session.outputNames.length} outputs written to ${outDir}`);
}

main().catch((e) => {
  console.error(`run_onnx: ${e.message}`);
  process.exit(1);
});

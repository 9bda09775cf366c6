// Validate GLB files with the Khronos glTF validator; prints one JSON line per file.
import fs from "fs";
import validator from "gltf-validator";

for (const file of process.argv.slice(2)) {
  const report = await validator.validateBytes(new Uint8Array(fs.readFileSync(file)));
  const { numErrors, numWarnings, messages } = report.issues;
  console.log(JSON.stringify({ file, numErrors, numWarnings, messages: messages.slice(0, 10) }));
}

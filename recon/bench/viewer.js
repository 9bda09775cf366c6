// recon bench: a minimal WebGL mesh viewer (vertex colours, flat shading, orbit with the mouse, wheel to zoom).
// Each <canvas class="mesh-view" data-mesh="ID"> shows the mesh of <script type="application/json" id="ID">
// {"positions": base64 float32 xyz, "indices": base64 uint32, "colors": base64 uint8 rgb or null}.
(function () {
  function decode(b64, Type) {
    const bin = atob(b64), bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new Type(bytes.buffer);
  }
  function expand(mesh) { // unshared vertices with face normals: flat shading without an extension
    const p = decode(mesh.positions, Float32Array), idx = decode(mesh.indices, Uint32Array);
    const c = mesh.colors ? decode(mesh.colors, Uint8Array) : null;
    const n = idx.length, pos = new Float32Array(n * 3), nor = new Float32Array(n * 3), col = new Float32Array(n * 3);
    for (let f = 0; f < n; f += 3) {
      const a = idx[f] * 3, b = idx[f + 1] * 3, d = idx[f + 2] * 3;
      const ux = p[b] - p[a], uy = p[b + 1] - p[a + 1], uz = p[b + 2] - p[a + 2];
      const vx = p[d] - p[a], vy = p[d + 1] - p[a + 1], vz = p[d + 2] - p[a + 2];
      let nx = uy * vz - uz * vy, ny = uz * vx - ux * vz, nz = ux * vy - uy * vx;
      const len = Math.hypot(nx, ny, nz) || 1; nx /= len; ny /= len; nz /= len;
      for (let k = 0; k < 3; k++) {
        const v = idx[f + k] * 3, o = (f + k) * 3;
        for (let j = 0; j < 3; j++) {
          pos[o + j] = p[v + j]; col[o + j] = c ? c[v + j] / 255 : 0.8;
        }
        nor[o] = nx; nor[o + 1] = ny; nor[o + 2] = nz;
      }
    }
    return { pos, nor, col, count: n };
  }
  const VS = "attribute vec3 p;attribute vec3 n;attribute vec3 c;uniform mat4 mvp;uniform mat4 mv;" +
    "varying vec3 vc;varying vec3 vn;void main(){gl_Position=mvp*vec4(p,1.0);vn=(mv*vec4(n,0.0)).xyz;vc=c;}";
  const FS = "precision mediump float;varying vec3 vc;varying vec3 vn;" +
    "void main(){float l=0.35+0.65*abs(normalize(vn).z);gl_FragColor=vec4(vc*l,1.0);}";
  function shader(gl, type, src) {
    const s = gl.createShader(type); gl.shaderSource(s, src); gl.compileShader(s); return s;
  }
  function mul(a, b) { // column-major 4x4 product a*b
    const o = new Float32Array(16);
    for (let i = 0; i < 4; i++) for (let j = 0; j < 4; j++) {
      let s = 0; for (let k = 0; k < 4; k++) s += a[k * 4 + j] * b[i * 4 + k]; o[i * 4 + j] = s;
    }
    return o;
  }
  function view(canvas) {
    const mesh = expand(JSON.parse(document.getElementById(canvas.dataset.mesh).textContent));
    const gl = canvas.getContext("webgl");
    if (!gl) { canvas.replaceWith(document.createTextNode("(WebGL is not available in this browser)")); return; }
    const prog = gl.createProgram();
    gl.attachShader(prog, shader(gl, gl.VERTEX_SHADER, VS));
    gl.attachShader(prog, shader(gl, gl.FRAGMENT_SHADER, FS));
    gl.linkProgram(prog); gl.useProgram(prog);
    for (const [name, data] of [["p", mesh.pos], ["n", mesh.nor], ["c", mesh.col]]) {
      const buf = gl.createBuffer(), loc = gl.getAttribLocation(prog, name);
      gl.bindBuffer(gl.ARRAY_BUFFER, buf); gl.bufferData(gl.ARRAY_BUFFER, data, gl.STATIC_DRAW);
      gl.enableVertexAttribArray(loc); gl.vertexAttribPointer(loc, 3, gl.FLOAT, false, 0, 0);
    }
    const lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
    for (let i = 0; i < mesh.pos.length; i++) {
      lo[i % 3] = Math.min(lo[i % 3], mesh.pos[i]); hi[i % 3] = Math.max(hi[i % 3], mesh.pos[i]);
    }
    const centre = lo.map((v, i) => (v + hi[i]) / 2);
    const radius = Math.max(1e-6, Math.hypot(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]) / 2);
    const state = { yaw: 0.6, pitch: 0.4, dist: 2.8 * radius, drag: null };
    function draw() {
      const cy = Math.cos(state.yaw), sy = Math.sin(state.yaw), cp = Math.cos(state.pitch), sp = Math.sin(state.pitch);
      // world -> camera: rotate about z (yaw) then about x (pitch), translate by -centre and back by dist
      const rz = new Float32Array([cy, -sy * cp, sy * sp, 0, sy, cy * cp, -cy * sp, 0, 0, sp, cp, 0, 0, 0, 0, 1]);
      const t = new Float32Array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, -centre[0], -centre[1], -centre[2], 1]);
      const rx = new Float32Array([1, 0, 0, 0, 0, 0, -1, 0, 0, 1, 0, 0, 0, 0, -state.dist, 1]);
      const mv = mul(rx, mul(rz, t));
      const f = 1 / Math.tan(0.4), near = state.dist / 100, far = state.dist * 10, asp = canvas.width / canvas.height;
      const proj = new Float32Array([f / asp, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) / (near - far), -1,
        0, 0, 2 * far * near / (near - far), 0]);
      gl.viewport(0, 0, canvas.width, canvas.height);
      gl.clearColor(1, 1, 1, 1); gl.enable(gl.DEPTH_TEST);
      gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
      gl.uniformMatrix4fv(gl.getUniformLocation(prog, "mvp"), false, mul(proj, mv));
      gl.uniformMatrix4fv(gl.getUniformLocation(prog, "mv"), false, mv);
      gl.drawArrays(gl.TRIANGLES, 0, mesh.count);
    }
    canvas.addEventListener("mousedown", (e) => { state.drag = [e.clientX, e.clientY]; });
    window.addEventListener("mouseup", () => { state.drag = null; });
    window.addEventListener("mousemove", (e) => {
      if (!state.drag) return;
      state.yaw += (e.clientX - state.drag[0]) * 0.01;
      state.pitch = Math.max(-1.5, Math.min(1.5, state.pitch + (e.clientY - state.drag[1]) * 0.01));
      state.drag = [e.clientX, e.clientY]; draw();
    });
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault(); state.dist *= Math.exp(e.deltaY * 0.001); draw();
    }, { passive: false });
    draw();
    canvas.dataset.drawn = "1";
  }
  document.querySelectorAll("canvas.mesh-view").forEach(view);
})();

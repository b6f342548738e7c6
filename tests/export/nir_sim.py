"""A small, independent numpy interpreter of NIR graphs in discrete time.

It is the oracle the NIR-export tests compare against, so it imports nothing from
snncompile. Everything is float32.

Semantics (time steps t = 1..T of length dt):

* A node's input is the SUM of its sources' outputs over its incoming edges, added in
  the order the edges are listed in ``graph.edges``.
* Stateless nodes, on the per-step input x of shape [N, *in_shape]:
  Input = inputs[name][t]; Output = its summed input; Affine = x @ W.T + b;
  Linear = x @ W.T; Scale = x * scale; Conv1d/Conv2d = cross-correlation exactly as
  torch.nn.functional.conv1d/conv2d (stride, padding int/tuple/'valid'/'same',
  dilation, groups; 'same' pads (k-1)*dilation/2 each side and raises when that is
  odd); SumPool2d = sum over each window (zero padding); AvgPool2d = that sum / (kh*kw)
  (count_include_pad=True); Flatten(start_dim, end_dim) merges per-sample dims
  start_dim..end_dim (dims counted without the batch dim); Threshold = (x > thr).
  Delay raises NotImplementedError.
* Stateful nodes (state 0 at t=1; parameters broadcast over N), updated literally as:
  I:      v <- v + dt*r*x;                                  out v
  IF:     v <- v + dt*r*x; z = v > v_th; v <- where(z, v_reset, v); out z
  LI:     v <- v + dt*(v_leak - v + r*x)/tau;               out v
  LIF:    LI update, then z/reset as IF;                    out z
  CubaLI: i <- i + dt*(-i + w_in*x)/tau_syn; v <- v + dt*(v_leak - v + r*i)/tau_mem
          (the membrane reads this step's current);         out v
  CubaLIF: CubaLI update, then z/reset as IF;               out z
* Cycles: a depth-first search from the Input nodes (in ``graph.nodes`` order), visiting
  successors in ``graph.edges`` order, marks every edge reaching a node on the DFS stack
  as DELAYED: it carries its source's output from step t-1 (nothing, i.e. 0, at t=1).
  A delayed edge must end at a stateful node, else ValueError("algebraic loop ...").
  Within a step nodes run in the reverse DFS post-order (a topological order of the
  graph without delayed edges). Nodes unreachable from every Input are a ValueError.
* Nested NIRGraph nodes are inlined (recursively): inner nodes are renamed
  "sub.inner"; edges into "sub" go to its (single) Input, edges out of "sub" leave
  from its (single) Output; edges may also name "sub.inner" directly. The inner
  Input/Output nodes become identity nodes (kept, and recorded, under their names).
"""
import numpy as np
import nir

F32 = np.float32
STATEFUL = (nir.I, nir.IF, nir.LI, nir.LIF, nir.CubaLI, nir.CubaLIF)


class _Identity:
    """Stand-in for an inlined subgraph's Input/Output node."""


def _a(v):
    return np.asarray(v, dtype=F32)


def _tup(v, nd):
    a = np.atleast_1d(np.asarray(v)).astype(int).ravel()
    return tuple(int(e) for e in np.broadcast_to(a, (nd,)))


def _flatten_graph(graph, prefix=""):
    """Inline nested NIRGraph nodes: returns (ordered {name: node}, [(src, dst)])."""
    nodes, edges, sub_in, sub_out = {}, [], {}, {}
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            inner_nodes, inner_edges = _flatten_graph(node, prefix + name + ".")
            ins = [prefix + name + "." + k for k, v in node.nodes.items() if isinstance(v, nir.Input)]
            outs = [prefix + name + "." + k for k, v in node.nodes.items() if isinstance(v, nir.Output)]
            for k in ins + outs:
                inner_nodes[k] = _Identity()
            nodes.update(inner_nodes)
            edges += inner_edges
            sub_in[name], sub_out[name] = ins, outs
        else:
            nodes[prefix + name] = node
    for src, dst in graph.edges:
        s = sub_out.get(src, [prefix + src])
        d = sub_in.get(dst, [prefix + dst])
        if len(s) != 1 or len(d) != 1:
            raise ValueError(f"edge {src!r} -> {dst!r}: subgraph has {len(s)} outputs / {len(d)} inputs; "
                             "name the inner node ('sub.inner') explicitly")
        edges.append((s[0], d[0]))
    return nodes, edges


def _windows(xp, k, s, d, out):
    """Yield (kernel offset, strided slice [N, C, *out]) for every kernel offset."""
    for off in np.ndindex(*k):
        sl = tuple(slice(o * dd, o * dd + (n - 1) * ss + 1, ss) for o, dd, ss, n in zip(off, d, s, out))
        yield off, xp[(slice(None), slice(None)) + sl]


def _pad_out(x, k, s, d, p):
    xp = np.pad(x, [(0, 0), (0, 0)] + [(q, q) for q in p])
    out = tuple((xp.shape[2 + i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(len(k)))
    if any(o <= 0 for o in out):
        raise ValueError(f"window {k} does not fit input of shape {x.shape}")
    return xp, out


def conv(x, w, b, stride, padding, dilation, groups):
    """numpy cross-correlation matching torch.nn.functional.conv{1,2}d; x: [N, C, *S]."""
    nd, k = w.ndim - 2, w.shape[2:]
    s, d, g = _tup(stride, nd), _tup(dilation, nd), int(groups)
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            raise ValueError(f"unknown padding {padding!r}")
        tot = [(kk - 1) * dd for kk, dd in zip(k, d)]
        if padding == "same" and any(t % 2 for t in tot):
            raise ValueError(f"padding='same' with kernel {k}, dilation {d} would pad asymmetrically")
        p = tuple(t // 2 for t in tot) if padding == "same" else (0,) * nd
    else:
        p = _tup(padding, nd)
    (n, c), co = x.shape[:2], w.shape[0]
    if c != w.shape[1] * g or co % g:
        raise ValueError(f"conv: input channels {c}, weight {w.shape}, groups {g} do not match")
    xp, out = _pad_out(x, k, s, d, p)
    wg = w.reshape((g, co // g, c // g) + k)
    y = np.zeros((n, g, co // g) + out, dtype=F32)
    for off, patch in _windows(xp, k, s, d, out):
        y += np.einsum("ngc...,goc->ngo...", patch.reshape((n, g, c // g) + out), wg[(Ellipsis,) + off])
    y = y.reshape((n, co) + out)
    return y if b is None else y + b.reshape((co,) + (1,) * nd)


def sum_pool(x, kernel_size, stride, padding):
    k = _tup(kernel_size, 2)
    s = _tup(kernel_size if stride is None else stride, 2)
    xp, out = _pad_out(x, k, s, (1, 1), _tup(padding, 2))
    return sum(patch for _, patch in _windows(xp, k, s, (1, 1), out))


def _flatten(x, start, end):
    shape = x.shape[1:]
    s, e = start % len(shape), end % len(shape)
    return x.reshape((x.shape[0],) + shape[:s] + (int(np.prod(shape[s:e + 1])),) + shape[e + 1:])


def _compile(node, dt):
    """Return f(x, state_dict) -> output for one node, with params cast to float32."""
    if isinstance(node, (nir.Output, _Identity)):
        return lambda x, st: x
    if isinstance(node, nir.Affine):
        return lambda x, st, W=_a(node.weight), b=_a(node.bias): x @ W.T + b
    if isinstance(node, nir.Linear):
        return lambda x, st, W=_a(node.weight): x @ W.T
    if isinstance(node, nir.Scale):
        return lambda x, st, c=_a(node.scale): x * c
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        W, b = _a(node.weight), None if node.bias is None else _a(node.bias)
        return lambda x, st: conv(x, W, b, node.stride, node.padding, node.dilation, node.groups)
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        div = F32(1) if isinstance(node, nir.SumPool2d) else F32(np.prod(_tup(node.kernel_size, 2)))
        return lambda x, st: sum_pool(x, node.kernel_size, node.stride, node.padding) / div
    if isinstance(node, nir.Flatten):
        return lambda x, st: _flatten(x, int(node.start_dim), int(node.end_dim))
    if isinstance(node, nir.Threshold):
        return lambda x, st, c=_a(node.threshold): (x > c).astype(F32)
    if isinstance(node, nir.Delay):
        raise NotImplementedError("nir_sim: Delay nodes are not supported")
    if not isinstance(node, STATEFUL):
        raise NotImplementedError(f"nir_sim: unsupported node type {type(node).__name__}")
    P = {k: _a(getattr(node, k)) for k in ("r", "tau", "v_leak", "v_threshold", "v_reset",
                                           "tau_syn", "tau_mem", "w_in") if hasattr(node, k)}
    spiking = isinstance(node, (nir.IF, nir.LIF, nir.CubaLIF))

    def step(x, st):
        v = st.get("v", F32(0))
        if isinstance(node, (nir.I, nir.IF)):
            v = v + dt * P["r"] * x
        elif isinstance(node, (nir.LI, nir.LIF)):
            v = v + dt * (P["v_leak"] - v + P["r"] * x) / P["tau"]
        else:
            i = st.get("i", F32(0))
            i = i + dt * (-i + P["w_in"] * x) / P["tau_syn"]
            v = v + dt * (P["v_leak"] - v + P["r"] * i) / P["tau_mem"]
            st["i"] = i
        if not spiking:
            st["v"] = v
            return v
        z = v > P["v_threshold"]
        st["v"] = np.where(z, P["v_reset"], v).astype(F32)
        return z.astype(F32)
    return step


def _schedule(nodes, edges):
    """DFS from the Inputs: (topological order, set of delayed edge indices)."""
    succ = {n: [] for n in nodes}
    for idx, (s, d) in enumerate(edges):
        succ[s].append((idx, d))
    color, delayed, post = dict.fromkeys(nodes, 0), set(), []
    for root in (n for n, v in nodes.items() if isinstance(v, nir.Input)):
        if color[root]:
            continue
        color[root], stack = 1, [(root, iter(succ[root]))]
        while stack:
            n, it = stack[-1]
            for idx, d in it:
                if color[d] == 1:
                    delayed.add(idx)
                elif color[d] == 0:
                    color[d] = 1
                    stack.append((d, iter(succ[d])))
                    break
            else:
                color[n] = 2
                post.append(n)
                stack.pop()
    unreachable = [n for n in nodes if color[n] == 0]
    if unreachable:
        raise ValueError(f"nodes not reachable from any Input: {unreachable}")
    for idx in sorted(delayed):
        s, d = edges[idx]
        if not isinstance(nodes[d], STATEFUL):
            raise ValueError(f"algebraic loop: edge {s!r} -> {d!r} closes a cycle into stateless node "
                             f"{d!r} ({type(nodes[d]).__name__}); a cycle needs a stateful node to delay it")
    return post[::-1], delayed


def simulate(graph, inputs, dt=1.0, record=False):
    """Run a NIR graph for T discrete steps with the semantics in the module docstring.

    Takes ``graph`` (a ``nir.NIRGraph``, nested subgraphs allowed), ``inputs`` (a dict
    {Input node name: array [T, N, *shape]} with shape the Input's
    ``input_type["input"]``, or one array when the graph has exactly one Input) and
    the step length ``dt``. Returns {Output node name: float32 array [T, N, *shape]};
    with ``record=True`` instead {node name: [T, N, ...]} for EVERY node (inlined
    subgraph nodes as "sub.inner"), its output at each step. Guarantees: all arithmetic
    in float32, edges summed in ``graph.edges`` order, deterministic; raises ValueError
    for algebraic loops, unreachable nodes, bad edges or bad input shapes and
    NotImplementedError for Delay or unknown node types.
    """
    nodes, edges = _flatten_graph(graph)
    for s, d in edges:
        if s not in nodes or d not in nodes:
            raise ValueError(f"edge {s!r} -> {d!r} names an unknown node")
        if isinstance(nodes[d], nir.Input):
            raise ValueError(f"edge {s!r} -> {d!r} leads into an Input node")
    dt = F32(dt)
    fns = {n: _compile(v, dt) for n, v in nodes.items() if not isinstance(v, nir.Input)}
    order, delayed = _schedule(nodes, edges)
    in_names = [n for n, v in nodes.items() if isinstance(v, nir.Input)]
    if not isinstance(inputs, dict):
        if len(in_names) != 1:
            raise ValueError(f"a single input array needs exactly one Input node, graph has {in_names}")
        inputs = {in_names[0]: inputs}
    if set(inputs) != set(in_names):
        raise ValueError(f"inputs {sorted(inputs)} do not match the graph's Input nodes {in_names}")
    xs = {n: _a(inputs[n]) for n in in_names}
    for n in in_names:
        shape = nodes[n].input_type.get("input")
        if xs[n].ndim < 2 or (shape is not None and xs[n].shape[2:] != tuple(int(e) for e in shape)):
            raise ValueError(f"input {n!r} has shape {xs[n].shape}, expected [T, N, *{shape}]")
    steps = {x.shape[0] for x in xs.values()}
    if len(steps) != 1 or 0 in steps:
        raise ValueError(f"inputs must share one T >= 1, got {sorted(steps)}")
    inc = {n: [] for n in nodes}
    for idx, (s, d) in enumerate(edges):
        inc[d].append((idx in delayed, s))
    states, hist, prev = {n: {} for n in nodes}, {n: [] for n in nodes}, {}
    for t in range(steps.pop()):
        cur = {}
        for n in order:
            if n in xs:
                cur[n] = xs[n][t]
                continue
            x = None
            for is_delayed, s in inc[n]:
                val = prev.get(s) if is_delayed else cur[s]
                if val is not None:
                    x = val if x is None else x + val
            cur[n] = fns[n](x, states[n])
        for n in nodes:
            hist[n].append(cur[n])
        prev = cur
    keep = nodes if record else [n for n in graph.nodes if isinstance(graph.nodes[n], nir.Output)]
    return {n: np.stack(hist[n]).astype(F32, copy=False) for n in keep}

"""What ONNX Runtime's CPU int8 kernels compute, in PyTorch: runs the graph ONNX Runtime
optimized a QDQ model into (run_onnx.js --save-optimized) with each fused kernel's own
arithmetic, as its documentation and MLAS's kernels define it:

- QLinearConv: exact integer accumulation of (x - x_zero_point) * (w - w_zero_point), plus
  the int32 bias; requantized as float32(acc) * (x_scale * w_scale / y_scale) (float32
  operations in that order), clamped to the output type's range less the zero point,
  rounded half to even, plus the zero point;
- QGemm (quantized output): as QLinearConv, per output column;
- QLinearAdd: a * (a_scale / c_scale) + (b * (b_scale / c_scale) + fixed), each a fused
  multiply-add, fixed = c_zero_point - (ratio_a * a_zero_point + ratio_b * b_zero_point);
- QLinearGlobalAveragePool: the integer sum less zero_point * size, requantized with
  x_scale / (y_scale * size);
- QuantizeLinear as ONNX defines it (x / scale), DequantizeLinear, max pooling on the
  integers (NhwcMaxPool: channels last), and the float ops as themselves.

An op it does not know raises ValueError naming it."""
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper


def attr(node, name, default=None):
    """Attribute `name` of an ONNX node, or `default`."""
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _f32(t):
    return t.to(torch.float32)


def _range(dtype):
    return (0, 255) if dtype == torch.uint8 else (-128, 127)


def _requantize(acc, scale, zero_point, dtype):
    lo, hi = _range(dtype)
    v = acc.to(torch.int32).to(torch.float32) * scale
    v = torch.clamp(v, float(lo - zero_point), float(hi - zero_point))
    return (torch.round(v).to(torch.int32) + zero_point).to(dtype)


def _per_axis(t, axis, rank):
    if t.dim() == 0 or t.numel() == 1:
        return t.reshape([])
    shape = [1] * rank
    shape[axis] = -1
    return t.reshape(shape)


def quantize(n, x, s, z):
    """QuantizeLinear as ONNX defines it: x / scale, rounded half to even."""
    lo, hi = _range(z.dtype)
    zp = int(z)
    return (torch.round(torch.clamp(x / _f32(s), lo - zp, hi - zp)) + zp).to(z.dtype)


def _dequantize(n, q, s, z):
    axis = attr(n, "axis", 1)
    return (q.to(torch.int32) - _per_axis(z.to(torch.int32), axis, q.dim())).to(torch.float32) * \
        _per_axis(_f32(s), axis, q.dim())


def _qlinear_conv(n, x, xs, xz, w, ws, wz, ys, yz, bias=None):
    channels_last = attr(n, "channels_last", 0)
    if channels_last:
        x = x.permute(0, 3, 1, 2)
    xd = x.to(torch.float64) - float(xz)  # float64 holds every int8 product sum exactly
    wd = w.to(torch.float64) - _per_axis(wz.to(torch.float64), 0, w.dim())
    pads = attr(n, "pads", [0] * 4)
    acc = F.conv2d(xd, wd, None, stride=attr(n, "strides", [1, 1]), padding=pads[:len(pads) // 2],
                   dilation=attr(n, "dilations", [1, 1]), groups=attr(n, "group", 1)).round().to(torch.int64)
    if bias is not None:
        acc = acc + bias.to(torch.int64).reshape(1, -1, 1, 1)
    scale = (_f32(xs) * _f32(ws) / _f32(ys)).reshape(1, -1, 1, 1)
    y = _requantize(acc, scale, int(yz), yz.dtype)
    return y.permute(0, 2, 3, 1).contiguous() if channels_last else y


def _qgemm(n, a, a_s, a_z, b, b_s, b_z, bias=None, y_s=None, y_z=None):
    if attr(n, "transA", 0) or attr(n, "alpha", 1.0) != 1.0 or y_s is None:
        raise ValueError("no int8 reference for QGemm %s with transA, alpha or a float output" % n.name)
    w = b.to(torch.float64)
    w = w if attr(n, "transB", 0) else w.t()
    w = w - _per_axis(b_z.to(torch.float64), 0, 2)
    acc = F.linear(a.to(torch.float64) - float(a_z), w).round().to(torch.int64)
    if bias is not None:
        acc = acc + bias.to(torch.int64)
    return _requantize(acc, _f32(a_s) * _f32(b_s) / _f32(y_s), int(y_z), y_z.dtype)


def _fma(a, b, c):
    """a * b + c rounded once to float32 (the product of two float32 is exact in float64)."""
    return (a.to(torch.float64) * b.to(torch.float64) + c.to(torch.float64)).to(torch.float32)


def _qlinear_add(n, a, a_s, a_z, b, b_s, b_z, c_s, c_z):
    ratio_a, ratio_b = _f32(a_s) / _f32(c_s), _f32(b_s) / _f32(c_s)
    fixed = torch.tensor(float(c_z), dtype=torch.float32) - (ratio_a * float(a_z) + ratio_b * float(b_z))
    c = _fma(a.to(torch.float32), ratio_a, _fma(b.to(torch.float32), ratio_b, fixed))
    lo, hi = _range(c_z.dtype)
    return torch.clamp(torch.round(c).to(torch.int32), lo, hi).to(c_z.dtype)


def _qlinear_global_average_pool(n, x, xs, xz, ys, yz):
    dims = (1, 2) if attr(n, "channels_last", 0) else (2, 3)
    size = x.shape[dims[0]] * x.shape[dims[1]]
    acc = x.to(torch.int64).sum(dims, keepdim=True) - int(xz) * size
    return _requantize(acc, _f32(xs) / (_f32(ys) * float(size)), int(yz), yz.dtype)


def _max_pool(n, x, channels_last=False):
    if channels_last:
        x = x.permute(0, 3, 1, 2)
    pads = attr(n, "pads", [0, 0, 0, 0])
    y = F.max_pool2d(x.to(torch.float32), attr(n, "kernel_shape"), attr(n, "strides"), pads[:2],
                     dilation=attr(n, "dilations", [1, 1]), ceil_mode=bool(attr(n, "ceil_mode", 0))).to(x.dtype)
    return y.permute(0, 2, 3, 1).contiguous() if channels_last else y


OPS = {
    "QuantizeLinear": quantize,
    "DequantizeLinear": _dequantize,
    "QLinearConv": _qlinear_conv,
    "QLinearAdd": _qlinear_add,
    "QGemm": _qgemm,
    "QLinearGlobalAveragePool": _qlinear_global_average_pool,
    "MaxPool": _max_pool,
    "NhwcMaxPool": lambda n, x: _max_pool(n, x, channels_last=True),
    "Transpose": lambda n, x: x.permute(*attr(n, "perm")).contiguous(),
    "Flatten": lambda n, x: x.flatten(attr(n, "axis", 1)),
    "Relu": lambda n, x: torch.relu(x),
    "Gemm": lambda n, a, b, c=None: F.linear(a, b if attr(n, "transB", 0) else b.t(), c),
}


def run(model, x):
    """The first output of the optimized graph `model` (an onnx.ModelProto) for input x."""
    with torch.no_grad():
        env = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in model.graph.initializer}
        env[model.graph.input[0].name] = x
        for node in model.graph.node:
            if node.op_type not in OPS:
                raise ValueError("no int8 reference for %s (node %s)" % (node.op_type, node.name))
            env[node.output[0]] = OPS[node.op_type](node, *[env[i] if i else None for i in node.input])
        return env[model.graph.output[0].name]

"""Model definitions of the qopt zoo, for Fashion-MNIST (1x28x28; super-resolution takes 1x14x14).

Every forward traces cleanly with torch.jit.trace into plain aten ops (no fused
attention or transformer layers), so qopt imports each op on its own.
"""
import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet18's topology (2-2-2-2 basic blocks) with a 3x3 stem and no max-pool."""

    def __init__(self, width=16, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        widths = [width, width * 2, width * 4, width * 8]
        cin = width
        for i, (w, stride) in enumerate(zip(widths, [1, 2, 2, 2])):
            setattr(self, "layer%d" % (i + 1), nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w, 1)))
            cin = w
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def mobilenet_v2(width_mult=0.5, num_classes=10):
    """torchvision's MobileNetV2 (depthwise convs, ReLU6) with stages sized for 28x28."""
    setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 2, 2], [6, 96, 2, 1]]
    model = torchvision.models.MobileNetV2(num_classes=num_classes, width_mult=width_mult,
                                           inverted_residual_setting=setting)
    stem = model.features[0][0]
    model.features[0][0] = nn.Conv2d(1, stem.out_channels, 3, 1, 1, bias=False)
    return model


class SmallCNN(nn.Module):
    """Two conv-bn-relu-pool stages and a linear head: the fast test model."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32 * 7 * 7, 64)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        return self.fc2(self.relu3(self.fc1(torch.flatten(x, 1))))


class ResidualBlock(nn.Module):
    """conv-ReLU-conv with an identity skip, no batch norm (as EDSR's)."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(self.relu(self.conv1(x)))


class SuperResolutionNet(nn.Module):
    """2x super-resolution, ESPCN/EDSR style: (N,1,14,14) in [0, 1] -> (N,1,28,28).

    The body predicts the residual over nearest-neighbour upscaling: its last conv makes
    4 channels that PixelShuffle turns into the 2x grid.
    """

    def __init__(self, channels=32, blocks=4):
        super().__init__()
        self.head = nn.Conv2d(1, channels, 3, padding=1)
        self.relu = nn.ReLU()
        self.body = nn.Sequential(*[ResidualBlock(channels) for _ in range(blocks)])
        self.tail = nn.Conv2d(channels, 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        features = self.relu(self.head(x))
        residual = self.shuffle(self.tail(self.body(features)))
        return residual + F.interpolate(x, scale_factor=2, mode="nearest")


def conv_bn_relu(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class UNet(nn.Module):
    """A small U-Net: 28 -> 14 -> 7 and back, 11 classes per pixel.

    One up-step is a transposed conv (kernel 2, stride 2), the other bilinear
    interpolation; skips are joined by torch.cat.
    """

    def __init__(self, width=16, num_classes=11):
        super().__init__()
        w1, w2, w3 = width, width * 2, width * 4
        self.enc1 = nn.Sequential(conv_bn_relu(1, w1), conv_bn_relu(w1, w1))
        self.pool1 = nn.MaxPool2d(2)
        self.enc2 = nn.Sequential(conv_bn_relu(w1, w2), conv_bn_relu(w2, w2))
        self.pool2 = nn.MaxPool2d(2)
        self.bottleneck = nn.Sequential(conv_bn_relu(w2, w3), conv_bn_relu(w3, w3), conv_bn_relu(w3, w3))
        self.up2 = nn.ConvTranspose2d(w3, w2, 2, stride=2)
        self.dec2 = nn.Sequential(conv_bn_relu(w2 + w2, w2), conv_bn_relu(w2, w2))
        self.dec1 = nn.Sequential(conv_bn_relu(w2 + w1, w1), conv_bn_relu(w1, w1))
        self.head = nn.Conv2d(w1, num_classes, 1)

    def forward(self, x):
        s1 = self.enc1(x)
        s2 = self.enc2(self.pool1(s1))
        x = self.bottleneck(self.pool2(s2))
        x = self.dec2(torch.cat([self.up2(x), s2], 1))
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.dec1(torch.cat([x, s1], 1))
        return self.head(x)


def _linear_conv(x, layer):
    """F.linear as a 1x1 convolution over (batch, features, tokens, 1)."""
    tokens = x.reshape(-1, x.shape[-2], x.shape[-1]) if x.dim() > 2 else x.unsqueeze(1)
    out = F.conv2d(tokens.transpose(1, 2).unsqueeze(-1), layer.weight[:, :, None, None], layer.bias)
    return out.squeeze(-1).transpose(1, 2).reshape(x.shape[:-1] + (layer.out_features,))


def _matmul_conv(a, b):
    """a (..., n, k) @ b (..., k, m) as one grouped 1x1 convolution over the batch."""
    batch, (n, k), m = a.shape[:-2], a.shape[-2:], b.shape[-1]
    groups = a[..., 0, 0].numel()
    x = a.reshape(groups, n, k).transpose(1, 2).reshape(1, groups * k, n, 1)
    w = b.reshape(groups, k, m).transpose(1, 2).reshape(groups * m, k, 1, 1)
    out = F.conv2d(x, w, groups=groups).reshape(groups, m, n).transpose(1, 2)
    return out.reshape(batch + (n, m))


class Products:
    """How the transformer multiplies: its linear layers and attention's two matmuls.

    Traced, they are always F.linear and the @ operator (aten::linear, aten::matmul).
    Debian's torch runs those on netlib's reference BLAS, on one core and 10-15x slower
    at these shapes than oneDNN's convolutions, so train.py trains inside
    `Products.convolutions()`: the same products as 1x1 convolutions, equal up to float
    rounding (gradients agree to 3e-6 relative).
    """
    on_convolutions = False

    @staticmethod
    def linear(x, layer):
        if Products.on_convolutions and not torch.jit.is_tracing():
            return _linear_conv(x, layer)
        # The module's own call: the traced graph then names the op after the module
        # ("blocks.0.attn.qkv"), and so do qopt's layers, encodings and reports.
        return layer(x)

    @staticmethod
    def matmul(a, b):
        if Products.on_convolutions and not torch.jit.is_tracing():
            return _matmul_conv(a, b)
        return a @ b

    @staticmethod
    @contextlib.contextmanager
    def convolutions():
        Products.on_convolutions = True
        try:
            yield
        finally:
            Products.on_convolutions = False


class Attention(nn.Module):
    """Multi-head self-attention written out: one qkv linear, matmuls, softmax, proj."""

    def __init__(self, dim, heads, tokens):
        super().__init__()
        self.heads, self.tokens, self.head_dim = heads, tokens, dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        qkv = Products.linear(x, self.qkv)
        qkv = qkv.reshape(-1, self.tokens, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (Products.matmul(q, k.transpose(-2, -1)) * self.scale).softmax(-1)
        out = Products.matmul(attn, v).transpose(1, 2).reshape(-1, self.tokens, self.heads * self.head_dim)
        return Products.linear(out, self.proj)


class TransformerBlock(nn.Module):
    """Pre-norm: x + attn(norm1(x)), then x + mlp(norm2(x)) with mlp = fc1, GELU, fc2."""

    def __init__(self, dim, heads, mlp_dim, tokens):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, tokens)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_dim, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + Products.linear(self.act(Products.linear(self.norm2(x), self.fc1)), self.fc2)


class VisionTransformer(nn.Module):
    """ViT-tiny style: 4x4 patches (49 tokens) and a cls token, pre-norm blocks, head on cls."""

    def __init__(self, dim=64, depth=4, heads=4, mlp_dim=128, patch=4, num_classes=10):
        super().__init__()
        self.dim = dim
        tokens = (28 // patch) ** 2 + 1
        self.patch_embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        self.blocks = nn.Sequential(*[TransformerBlock(dim, heads, mlp_dim, tokens) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return Products.linear(x[:, 0], self.head)


ARCHS = {
    "small_cnn": SmallCNN,
    "resnet18": ResNet18,
    "mobilenet_v2": mobilenet_v2,
    "super_resolution": SuperResolutionNet,
    "segmentation": UNet,
    "vit_tiny": VisionTransformer,
}

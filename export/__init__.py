"""Model export: CodeFormer and U2-Net definitions, weights registry, ONNX export + parity."""

"""The head of a child-process script in which torch and onnx cannot be imported: the runtime path's tests run
``import edgemed`` and ``load``/``predict`` after it, so a stray import fails instead of passing unnoticed."""

BLOCK_TORCH_ONNX = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'onnx', 'onnxscript'):
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
"""

"""Sharing a model: the model card, ONNX export (and scoring through ONNX Runtime), the HTML inspection page."""

"""Running exported models without torch: onnxruntime, Pillow and numpy only.

Nothing in this package imports torch, torchvision or mmengine (a subprocess test checks it), so
``cncnn predict --checkpoint model.onnx`` starts in a fraction of the time a ``.safetensors``
checkpoint takes.
"""

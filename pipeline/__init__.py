"""The portrait's image pipeline (``facecraft.pipeline``): pure numpy / OpenCV / Pillow / dlib.

Every stage is a function from named arrays to named arrays (``stages``), run by the Triton
Python-backend models through ``triton_adapter.StageModel`` and tested without Triton:

- ``decode``: sniff the upload's format by content, decode it (EXIF orientation, colour), validate
  the options (``options``) and the pixel cap;
- ``detect``: dlib HOG face detection and 68-point landmarks, every face counted, the largest used;
- ``align``: level the eye line, crop with a margin, FFHQ alignment for CodeFormer;
- ``segment``: U²-Net pre/post-processing into an alpha matte;
- ``compose``: paste the restored face back, oval mask, resize with padding, PNG and size-capped
  JPEG encoding;
- ``presets``, ``idphoto``, ``layout``: ID-photo presets (one table), head geometry from the
  landmarks and the mask, the compliance report, print sheets (docs/presets.md);
- ``errors``: ``PipelineError`` and its codes (``<code>: <step>: <detail>`` at Triton).

docs/pipeline.md describes each stage with its numbers.
"""

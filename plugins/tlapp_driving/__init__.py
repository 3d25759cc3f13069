"""tlapp driving plugin: object detection with Faster R-CNN."""

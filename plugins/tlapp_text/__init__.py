"""tlapp text plugin: fine-tune a pretrained transformer to classify documents."""

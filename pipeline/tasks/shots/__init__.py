"""task: shots: each video's shots (TransNetV2 or PySceneDetect), and every task per shot."""

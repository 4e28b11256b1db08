"""The figures every judgement rests on, below the tasks that use them: bounds and intervals (``stats``),
accuracy, Dice and detection metrics, the drift metrics table and record (``comparison``), decision margins and
lesion geometry (``margins``), paired clinical statistics (``clinical``) and ground truth's file forms (``truth``)."""

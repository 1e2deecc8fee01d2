"""Evaluation: rating metrics (RMSE, MAE), full-catalogue ranking metrics and the popularity
and exposure measures that show MNAR bias (`metrics`, `ranking`, `beyond`)."""

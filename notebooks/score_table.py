# Databricks notebook source
# MAGIC %md
# MAGIC # Score a Delta table
# MAGIC
# MAGIC Scores a Delta table with an MLflow model (`mlflow.pyfunc.spark_udf`, on the cluster) and
# MAGIC appends the labels, class probabilities, model version and scoring time to a Delta table.
# MAGIC Running it again for the same input version appends nothing. Tables are paths (with a
# MAGIC `/`) or names such as `main.orchestrator.churn`.

# COMMAND ----------

from orchestrator.entrypoints.notebook_support import notebook_dbutils, show
from orchestrator.scoring import read_predictions, score_table
from orchestrator.io.session import get_spark

dbutils = notebook_dbutils(globals())
dbutils.widgets.text("model_uri", "models:/churn@champion", "Model URI")
dbutils.widgets.text("input", "../data/demo/churn", "Input Delta table")
dbutils.widgets.text("output", "../data/demo/churn_predictions", "Prediction Delta table")
dbutils.widgets.text("keep_columns", "customer_id", "Input columns to keep (comma-separated)")

# COMMAND ----------

spark = get_spark("orchestrator-notebook")
result = score_table(spark, dbutils.widgets.get("model_uri"), dbutils.widgets.get("input"),
                     dbutils.widgets.get("output"),
                     keep_columns=dbutils.widgets.get("keep_columns") or None)
show(result, globals())

# COMMAND ----------

show(read_predictions(spark, dbutils.widgets.get("output"), input_version=result.input_version,
                      model_version=result.model_version), globals())

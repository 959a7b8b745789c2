"""Operating a store: a build's plan before it runs, publishing behind the quality gate, and
the Spark-free tasks of the Airflow DAG."""

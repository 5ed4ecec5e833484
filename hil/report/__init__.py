"""Reports for people and tools: fault matrix, traceability and run record (`records`), the
requirement catalogue, Allure for auditors, the single-file HTML and its browser check, merge of
several hosts' reports, evidence plots.
"""

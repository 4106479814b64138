"""13.1: each program's total run time, estimated over all its runs."""


def answer(df):
    by_name = df.set_index("name")
    return by_name["run_time_ns"] / by_name["run_cnt"] * by_name["own_count"]

version 1.0

# A scatter whose every branch writes a File, and a gather reading those files back: each step
# runs as a Toil job (on the agents with --runLocalJobsOnWorkers), and every file goes through
# the job store. Needs no container engine, unlike tasks.wdl.
workflow greetings {
  input {
    Array[String] names
    File words
  }
  Array[String] lines = read_lines(words)
  scatter (name in names) {
    File greeting = write_lines(["Hello ~{name}, ~{length(lines)} words"])
  }
  scatter (written in greeting) {
    Array[String] read_back = read_lines(written)
  }
  File combined = write_lines(flatten(read_back))
  output {
    Array[File] greetings = greeting
    File all = combined
    Int count = length(flatten(read_back))
  }
}

version 1.0

# Tasks: a scatter over a task with File input and output, then a task gathering the files.
# Toil runs WDL tasks in containers (Singularity or Docker), so agents need an engine.
workflow greetings {
  input {
    Array[String] names
    File words
  }
  scatter (name in names) {
    call greet { input: name = name, words = words }
  }
  call combine { input: parts = greet.greeting }
  output {
    Array[File] greetings = greet.greeting
    File combined = combine.all
    Int lines = combine.lines
  }
}

task greet {
  input {
    String name
    File words
  }
  command <<<
    set -e
    echo "Hello ~{name}, $(wc -l < '~{words}') words" > greeting.txt
  >>>
  output {
    File greeting = "greeting.txt"
  }
}

task combine {
  input {
    Array[File] parts
  }
  command <<<
    set -e
    cat ~{sep=" " parts} | sort > all.txt
    wc -l < all.txt > count.txt
  >>>
  output {
    File all = "all.txt"
    Int lines = read_int("count.txt")
  }
}

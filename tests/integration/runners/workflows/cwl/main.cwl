#!/usr/bin/env cwl-runner
# Every CWL feature the runner tests cover, in one small workflow: a scatter over a tool that
# uses JavaScript and a shell pipeline, a subworkflow staging a file with InitialWorkDir, and
# a tool reading an input's secondary file.
cwlVersion: v1.2
class: Workflow
requirements:
  ScatterFeatureRequirement: {}
  SubworkflowFeatureRequirement: {}
inputs:
  names: string[]
  words: File
  indexed:
    type: File
    secondaryFiles: [.idx]
outputs:
  greetings:
    type: File[]
    outputSource: greet/greeting
  counts:
    type: File
    outputSource: count/counts
  lookup:
    type: File
    outputSource: lookup/found
steps:
  greet:
    run: greet.cwl
    scatter: name
    in:
      name: names
    out: [greeting]
  count:
    run: count-words.cwl
    in:
      words: words
    out: [counts]
  lookup:
    run: lookup.cwl
    in:
      indexed: indexed
    out: [found]

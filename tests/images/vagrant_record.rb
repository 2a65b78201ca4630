# Loads a Vagrantfile with a stand-in for Vagrant that records every setting
# and call, and prints them as JSON: the structure test reads that.
require "json"

$events = []

class Recorder
  def initialize(path)
    @path = path
  end

  def method_missing(name, *args, **kwargs, &block)
    key = name.to_s
    if key.end_with?("=")
      $events << { "path" => "#{@path}.#{key.chomp('=')}", "set" => args[0] }
      return args[0]
    end
    path = "#{@path}.#{key}"
    return Recorder.new(path) if args.empty? && kwargs.empty? && block.nil?

    $events << { "path" => path, "args" => args, "kwargs" => kwargs }
    block&.call(Recorder.new("#{path}(#{args.map(&:to_s).join(',')})"))
    nil
  end

  def respond_to_missing?(*)
    true
  end
end

module Vagrant
  def self.configure(version)
    $events << { "path" => "configure", "args" => [version], "kwargs" => {} }
    yield Recorder.new("config")
  end
end

load ARGV.fetch(0)
puts JSON.generate($events)
